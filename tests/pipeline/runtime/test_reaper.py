"""The reaper on real processes: what a task started and left untied dies with its SIGKILLed Dask worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from pipeline.run_config import ClusterConfig
from pipeline.runtime.cluster import connect
from pipeline.runtime.reaper import POLL_S
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
