"""live_workers reads the scheduler's worker list directly, never the client's racy cache."""
from __future__ import annotations

import dask
from distributed import Client, LocalCluster

from pipeline.runtime.workers import live_workers

CALLS = 300


def _count_misses(read) -> int:
    # the client refreshes its cached identity (with no workers in it) every millisecond here,
    # as it does every 2 s by default: a read through that cache sees the workers vanish
    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        expected = set(cluster.scheduler.workers)
        return sum(set(read(client)) != expected for _ in range(CALLS))


def test_live_workers_never_misses_a_worker():
    # (client.scheduler_info(n_workers=-1)["workers"] missed them in 158 of 300 reads here)
    assert _count_misses(live_workers) == 0

