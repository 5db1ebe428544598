"""Resident ranks: one long-lived process per rank on its Dask worker, fed one request at a time.

A *holder* task per rank (``hold``), pinned to the rank's worker, secedes from
the worker's thread pool (the worker goes on running other tasks) and runs the
rank's process for as long as the task is wanted, through ``supervise``: the
process dies with the worker, and is killed once the holder is cancelled (the
driver stopped the group, or died: its client's tasks are released). The
process is started with its first request; it reads each further one as a JSON
line on stdin, answers each with one line (``trainer.protocol.ROUND_PREFIX``)
and writes its output to a log in its folder.

A request is made by a task on the same worker (``Held.ask``), which waits for
the answer while passing the process's step records on (``emit``); a request
given up (its task cancelled) is followed by stopping the group, so no late
answer is taken for the next request's. A process that ended while idle or
working raises ``ResidentGone`` when it was killed by a signal (the driver
starts the group again), ``RuntimeError`` with its log's tail when it exited on
an error of its own.

On the driver, ``Residents`` is a started group: its holders, where they run
and the processes they started. ``alive`` checks that the same processes still
run; ``stop`` cancels the holders and waits until their processes are gone.
"""
from __future__ import annotations

import json
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Callable

from pipeline.runtime.ranks import POLL_S, Placement, stop_ranks, submit_ranks, supervise, wanted
from pipeline.runtime.workers import live_workers

START_S = 120.0  # how long a started group may take until every holder runs its process
_HELD: dict[str, "Held"] = {}  # this worker process's resident processes, by their holder task's key


class ResidentGone(RuntimeError):
    """A resident process ended without an error of its own (killed by a signal): start the group again."""


@dataclass
class Held:
    """A resident process on this worker: where it keeps its files, and its answers as they come."""

    folder: str  # the process's own folder (its TMPDIR), holding its log
    proc: object = None  # its subprocess.Popen, once started
    replies: queue.Queue = field(default_factory=queue.Queue)
    emit: Callable[[dict], None] = lambda m: None  # where its step records go (the current request's)

    @property
    def log_path(self) -> str:
        return os.path.join(self.folder, "log")

    def ask(self, request: dict | None, emit: Callable[[dict], None]) -> dict | None:
        """Send ``request`` (None: the one it was started with); its answer (None once this task is no longer
        wanted)."""
        self.emit = emit
        try:
            if request is not None:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # ended, its stdin closed
            pass
        while True:
            try:
                return self.replies.get(timeout=POLL_S)
            except queue.Empty:
                pass
            if self.proc.poll() is not None:
                raise self.ended()
            if not wanted():
                return None

    def ended(self) -> RuntimeError:
        """The error that says how the process ended (with its log's tail when it failed on its own)."""
        code = self.proc.returncode
        if code < 0:
            return ResidentGone(f"resident process {self.proc.pid} was killed by signal {-code}")
        with open(self.log_path, errors="replace") as fh:
            return RuntimeError(f"resident process {self.proc.pid} exited with {code}:\n{fh.read()[-3000:]}")


def hold(key: str, cmd: list[str], env: dict, folder: str, emit: Callable[[dict], None]) -> int | None:
    """A holder task's body: run ``cmd`` (its first request, whose step records go to ``emit``) as the resident
    process ``key`` until it ends or the task is cancelled; its exit code (None: killed)."""
    from distributed import secede

    secede()
    held = Held(folder, emit=emit)
    try:
        with open(held.log_path, "w") as log:
            return supervise(cmd, env, log, lambda m: held.emit(m), started=lambda proc: _register(key, held, proc),
                             replies=held.replies.put)
    finally:
        _HELD.pop(key, None)


def _register(key: str, held: Held, proc) -> None:
    held.proc = proc
    _HELD[key] = held


def held(key: str) -> Held:
    """The resident process ``key`` of this worker; ``ResidentGone`` when it is not running."""
    found = _HELD.get(key)
    if found is None:
        raise ResidentGone(f"no resident process {key} on this worker (its holder ended)")
    if found.proc.poll() is not None:
        raise found.ended()
    return found


def _running(keys: list[str], dask_worker=None) -> dict[str, int]:
    return {k: h.proc.pid for k in keys if (h := _HELD.get(k)) is not None and h.proc.poll() is None}


@dataclass
class Residents:
    """A started group of resident ranks (rank i's holder on ``placement.workers[i]``)."""

    placement: Placement
    futures: list  # the holder tasks, by rank
    pids: dict[str, int]  # the process each holder started, by its key
    spec: tuple  # what the group was started for: a group for another spec is started anew

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.futures]

    def alive(self, client) -> bool:
        """Whether every worker and holder of the group lives and runs the process it started."""
        if any(f.done() for f in self.futures) or not set(self.placement.workers) <= set(live_workers(client)):
            return False
        try:
            return _pids(client, self.keys, self.placement.workers) == self.pids
        except Exception:  # a worker left since: not alive, whatever the error says
            return False

    def stop(self, client) -> None:
        """Cancel the holders and wait until their processes are gone."""
        stop_ranks(client, self.futures)


def start(client, task: Callable, args: list[tuple], placement: Placement, key: str, spec: tuple) -> Residents:
    """One holder ``task(f"{key}-rank{rank}", *args[rank])`` per rank (no resources: a request's task holds them);
    returns once each runs its process (a holder's error is raised)."""
    keys = [f"{key}-rank{rank}" for rank in range(len(args))]
    futures = submit_ranks(client, task, [(k, *a) for k, a in zip(keys, args)], placement, {}, key)
    deadline = time.monotonic() + START_S
    while len(pids := _pids(client, keys, placement.workers)) < len(keys):
        for f in futures:
            if f.done():
                code = f.result()  # raises the holder's error
                if code and code > 0:
                    raise RuntimeError(f"resident process {f.key} exited with {code} as it started")
                raise ResidentGone(f"resident process {f.key} was killed as it started")
        if time.monotonic() > deadline:
            stop_ranks(client, futures)
            raise RuntimeError(f"resident processes {keys} did not start within {START_S:.0f} s")
        time.sleep(POLL_S)
    return Residents(placement, futures, pids, spec)


def _pids(client, keys: list[str], workers: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for pids in client.run(_running, keys, workers=workers).values():
        found.update(pids)
    return found
