"""Every process a Dask worker started dies with the worker, even when the worker is SIGKILLed.

The trainer and env workers tie themselves to their parent (``pipeline.runtime.lifeline``);
processes that libraries start (vLLM's engine core, compiler jobs) do not.
``ReapOrphans``, a worker plugin that ``pipeline.runtime.cluster.connect`` registers,
starts one small reaper process per worker (``python -m pipeline.runtime.reap PID``), which
SIGKILLs what the worker left running once the worker is gone.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import subprocess
import sys

from distributed.diagnostics.plugin import WorkerPlugin

_REAPER: dict = {}  # the reaper of this worker process, once started


class ReapOrphans(WorkerPlugin):
    """Worker plugin: start this worker's reaper (once per worker process); end the process fast once closed."""

    name = "gigpo-reap-orphans"

    def setup(self, worker) -> None:
        proc = _REAPER.get("proc")
        if proc is None or proc.poll() is not None:
            _REAPER["proc"] = subprocess.Popen([sys.executable, "-m", "pipeline.runtime.reap", str(os.getpid())],
                                               stdin=subprocess.DEVNULL)

    def teardown(self, worker) -> None:
        if multiprocessing.parent_process() is not None:  # a nanny's worker process, not a process hosting workers
            atexit.register(_end_now)


def _end_now() -> None:
    """At a closed worker's process exit: run the other exit handlers, then end without module teardown.

    With torch and transformers loaded that teardown takes seconds (2.4 s measured on a loaded
    machine), and a nanny kills a worker process not gone 4 s after it asked it to close, with a
    warning at every cluster shutdown. Output is flushed first.
    """
    atexit.unregister(_end_now)
    atexit._run_exitfuncs()  # the handlers registered before this one (it runs first, as the last registered)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
