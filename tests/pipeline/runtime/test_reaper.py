"""The reaper on real processes: what a task started and left untied dies with its SIGKILLed Dask worker."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import psutil

from pipeline.run_config import ClusterConfig
from pipeline.runtime.cluster import connect
from pipeline.runtime.reap import POLL_S
from tests.pipeline.round_helpers import gone

UNTIED = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"


def _start_untied() -> int:
    """A task: start a process that starts another, neither tied to this worker; the first one's pid."""
    return subprocess.Popen([sys.executable, "-c", UNTIED]).pid


def test_processes_a_task_left_behind_die_with_their_worker():
    with connect(ClusterConfig(n_workers=1)) as client:
        child = psutil.Process(client.submit(_start_untied, pure=False).result())
        deadline = time.monotonic() + 60
        while not (grandchild := child.children()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(3 * POLL_S)  # the reaper has seen both
        (worker,) = client.run(os.getpid).values()
        os.kill(worker, signal.SIGKILL)
        left = [p.pid for p in [child, *grandchild] if not gone(p, 10.0)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, "processes outlived their Dask worker"


class _SlowTeardown:
    def __del__(self):
        time.sleep(8)  # as Python's module teardown of torch and transformers on a loaded machine


def _slow_teardown() -> None:
    """Leave an object whose teardown takes 8 s in this worker process's modules."""
    import types

    module = types.ModuleType("gigpo_slow_teardown")
    module.obj = _SlowTeardown()
    sys.modules[module.__name__] = module


def test_closed_workers_end_without_module_teardown(caplog):
    with caplog.at_level(logging.WARNING, logger="distributed.nanny"):
        logging.getLogger("distributed.nanny").addHandler(caplog.handler)
        try:
            with connect(ClusterConfig(n_workers=1)) as client:
                client.run(_slow_teardown)
        finally:
            logging.getLogger("distributed.nanny").removeHandler(caplog.handler)
    assert not [r.getMessage() for r in caplog.records if "still alive" in r.getMessage()]
