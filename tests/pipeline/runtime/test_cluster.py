"""The LocalCluster the driver starts: worker environment."""
from __future__ import annotations

import os

from pipeline.run_config import ClusterConfig
from pipeline.runtime.cluster import connect
from pipeline.runtime.ranks import without_nanny_malloc


def _worker_env():
    import polars as pl
    import pyarrow as pa

    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"), pl.thread_pool_size(), \
        pa.cpu_count()


def test_workers_run_without_the_malloc_threshold_and_with_polars_on_their_threads(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as an earlier nanny in this process left it
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        seen = client.run(_worker_env)
    # Dask's other settings stay; Polars and Arrow use the worker's one thread, not the host's cores
    assert list(seen.values()) == [(None, "1", 1, 1)]
    assert without_nanny_malloc({"MALLOC_TRIM_THRESHOLD_": "65536", "PATH": "/bin"}) == {"PATH": "/bin"}
