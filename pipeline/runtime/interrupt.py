"""Ctrl-C of a driver: the driver alone stops, says where, and exits 130; a rerun resumes.

A terminal sends Ctrl-C's SIGINT to its whole foreground process group: the
driver and the LocalCluster worker processes it started, with their trainers and
env processes. ``IgnoreInterrupts``, a worker plugin registered for a LocalCluster
only (``pipeline.runtime.cluster``), makes each worker process ignore SIGINT, and
so every process it starts afterwards (an ignored signal stays ignored across
exec); the driver shuts the workers down as it leaves, and a worker closed with a
task running does not warn that the task's coroutine was cancelled. Workers of a
cluster started elsewhere keep their own Ctrl-C.

>>> interrupted((3, "train"))
'interrupted in round 3, stage train; rerun the same command to resume'
"""
from __future__ import annotations

import logging
import signal
import threading

from distributed.diagnostics.plugin import WorkerPlugin

INTERRUPTED = 130  # the exit code of a process ended by Ctrl-C (128 + SIGINT), as shells report it


class IgnoreInterrupts(WorkerPlugin):
    """Worker plugin: the worker process, and the processes it starts from now on, ignore SIGINT."""

    name = "gigpo-ignore-interrupts"

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():  # a worker process, not a thread of the driver
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            logging.getLogger("distributed.worker.state_machine").addFilter(_not_cancelled_at_close)


def _not_cancelled_at_close(record: logging.LogRecord) -> bool:
    """Drop the warning a closing worker logs for each task it was running (Dask: only ``Worker.close`` does)."""
    return not record.getMessage().endswith("ended with CancelledError")


def interrupted(where: tuple[int, str] | None) -> str:
    """The driver's one line on Ctrl-C; ``where``: the round and stage that was running (None: before any)."""
    place = f"round {where[0]}, stage {where[1]}" if where else "setup"
    return f"interrupted in {place}; rerun the same command to resume"
