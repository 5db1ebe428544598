"""The LocalCluster the driver starts: worker environment."""
from __future__ import annotations

import os

from pipeline.run_config import ClusterConfig
from pipeline.runtime.cluster import connect
from pipeline.stages.train import _without_nanny_malloc


def test_workers_and_trainers_run_without_the_nannys_malloc_trim_threshold(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as an earlier nanny in this process left it
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        seen = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
    assert list(seen.values()) == [(None, "1")]  # Dask's other settings stay
    assert _without_nanny_malloc({"MALLOC_TRIM_THRESHOLD_": "65536", "PATH": "/bin"}) == {"PATH": "/bin"}
