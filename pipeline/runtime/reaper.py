"""Every process a Dask worker started dies with the worker, even when the worker is SIGKILLed.

The trainer and env workers tie themselves to their parent (``pipeline.runtime.lifeline``);
processes that libraries start (vLLM's engine core, compiler jobs) do not.
``ReapOrphans``, a worker plugin that ``pipeline.runtime.cluster.connect`` registers,
starts one small reaper process per worker (``python -m pipeline.runtime.reaper PID``):
it notes the worker's descendants every ``POLL_S`` seconds and, once the
worker is gone, SIGKILLs those still running and their children, then exits.

>>> import subprocess
>>> owner = subprocess.Popen(["true"])
>>> owner.wait(), reap(owner.pid)
(0, 0)
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psutil
from distributed.diagnostics.plugin import WorkerPlugin

POLL_S = 1.0  # how often the reaper notes the worker's descendants
_REAPER: dict = {}  # the reaper of this worker process, once started


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap(pid: int, poll_s: float = POLL_S) -> int:
    """Watch process ``pid``; once it is gone, SIGKILL the descendants it had; return how many were killed."""
    try:
        owner = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    seen: dict[int, psutil.Process] = {}
    while _alive(owner):
        try:
            seen.update((p.pid, p) for p in owner.children(recursive=True) if p.pid != os.getpid())
        except psutil.Error:
            pass  # the worker ended while its tree was read
        seen = {k: p for k, p in seen.items() if _alive(p)}
        time.sleep(poll_s)
    doomed = [p for p in seen.values() if _alive(p)]
    for proc in list(doomed):
        try:
            doomed += proc.children(recursive=True)
        except psutil.Error:
            pass
    killed = 0
    for proc in doomed:
        try:
            proc.kill()
            killed += 1
        except psutil.Error:
            pass
    return killed


class ReapOrphans(WorkerPlugin):
    """Worker plugin: start this worker's reaper (once per worker process); end the process fast once closed."""

    name = "gigpo-reap-orphans"

    def setup(self, worker) -> None:
        proc = _REAPER.get("proc")
        if proc is None or proc.poll() is not None:
            _REAPER["proc"] = subprocess.Popen([sys.executable, "-m", "pipeline.runtime.reaper", str(os.getpid())],
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


def main(argv: list[str]) -> int:
    # A Ctrl-C or SIGTERM to the worker's process group stops the worker; the reaper must outlive it to reap.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reap(int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
