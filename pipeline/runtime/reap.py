"""``python -m pipeline.runtime.reap PID``: once process PID is gone, SIGKILL the descendants it had.

The reaper of a Dask worker (``pipeline.runtime.reaper`` starts one beside each): it notes the worker's
descendants every ``POLL_S`` seconds and, once the worker is gone, SIGKILLs those still running and their
children, then exits. It imports psutil alone, to start fast beside every worker.

>>> import subprocess
>>> owner = subprocess.Popen(["true"])
>>> owner.wait(), reap(owner.pid)
(0, 0)
"""
from __future__ import annotations

import os
import signal
import sys
import time

import psutil

POLL_S = 1.0  # how often the reaper notes the worker's descendants


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


def main(argv: list[str]) -> int:
    # A Ctrl-C or SIGTERM to the worker's process group stops the worker; the reaper must outlive it to reap.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reap(int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
