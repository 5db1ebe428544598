"""Child processes that cannot outlive the process that started them.

A process a Dask task starts (the trainer, env workers) survives a killed
worker by default, and could then write, even commit, after a new driver took
the run over. Two ties (Linux; elsewhere they do nothing):

- ``tied()``: a ``preexec_fn`` for ``subprocess.Popen``; the kernel SIGKILLs
  the child when the thread that started it ends (``prctl(PR_SET_PDEATHSIG)``),
  even by SIGKILL of its process. That thread must wait for the child.
- ``exit_with_parent()``: called in a child, SIGKILLs it once its parent
  process is gone (it is re-parented), checked every ``poll_s``.

>>> import subprocess, sys
>>> subprocess.run([sys.executable, "-c", "pass"], preexec_fn=tied(), check=True).returncode
0
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from typing import Callable

_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: a preexec_fn runs between fork and exec and must not load libraries.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with(parent: int) -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the tie was made
        os._exit(1)


def tied() -> Callable[[], None] | None:
    """A ``preexec_fn`` that ties the child's life to this process (None where unsupported)."""
    return functools.partial(_die_with, os.getpid()) if _LIBC is not None else None


def exit_with_parent(poll_s: float = 0.5) -> threading.Thread:
    """In a child process: SIGKILL this process as soon as its parent is gone; the watching thread."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread
