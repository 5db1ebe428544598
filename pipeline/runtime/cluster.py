"""Connect the driver to a Dask cluster, or start a LocalCluster.

Workers are made non-daemonic: rollout tasks start env worker processes and
training tasks start trainer processes, which daemonic processes may not.
Every worker gets a reaper (``pipeline.runtime.reaper``): what its tasks started dies
with it. The workers of a LocalCluster ignore Ctrl-C (``pipeline.runtime.interrupt``):
the driver stops them.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import dask
from distributed import Client, LocalCluster

from pipeline.run_config import ClusterConfig
from pipeline.runtime.interrupt import IgnoreInterrupts
from pipeline.runtime.reaper import ReapOrphans


@contextlib.contextmanager
def connect(cfg: ClusterConfig) -> Iterator[Client]:
    """``with connect(cfg) as client:``: the configured scheduler, ``$DASK_SCHEDULER_ADDRESS``, or a LocalCluster."""
    address = cfg.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        print(f"setup: connecting to the scheduler at {address} ...", flush=True)
        with Client(address) as client:
            client.register_plugin(ReapOrphans())
            yield client
        return
    # The nanny's MALLOC_TRIM_THRESHOLD_ makes glibc mmap every large tensor: torch generation and training
    # then spend about half their time in page faults (see pipeline.runtime.ranks); None unsets it. A nanny
    # also sets it in the process that starts it, whose environment the next workers inherit: drop it here.
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    print(f"setup: starting a LocalCluster of {cfg.n_workers} worker(s) x {cfg.threads_per_worker} thread(s) ...",
          flush=True)
    # Polars sizes its thread pool by the host's cores, not threads_per_worker (the nanny's OMP_NUM_THREADS
    # bounds Arrow's pool only): without this, n workers would run n x cores Polars threads.
    environ = "distributed.nanny.pre-spawn-environ."
    with dask.config.set({"distributed.worker.daemon": False, environ + "MALLOC_TRIM_THRESHOLD_": None,
                          environ + "POLARS_MAX_THREADS": str(cfg.threads_per_worker)}), \
            LocalCluster(n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker, processes=True,
                         # no dashboard, and the scheduler's HTTP server (health, metrics) on a free port
                         # rather than its default 8787, busy when another cluster runs on this host
                         dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            Client(cluster) as client:
        client.register_plugin(IgnoreInterrupts())
        client.register_plugin(ReapOrphans())
        yield client

