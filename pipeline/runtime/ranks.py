"""A group of ranks on the Dask cluster: one task pinned to each worker, each supervising a process of its own.

``place_ranks`` picks the workers (those offering the resources, waiting a while
for enough of them) and the rendezvous: rank 0's host and a free port there.
``submit_ranks`` pins one task per rank to its worker; ``wait_ranks`` waits for
them while polling the cluster: a rank's error is raised at once (the other
ranks might wait for it forever), and a pinned worker that left the cluster
(killed, or restarted by its nanny under a new address) ends the wait, since its
task would wait for that worker forever. ``stop_ranks`` cancels the tasks and
waits until no worker runs one.

Inside a rank task, ``supervise`` runs its process tied to the task: it dies
with the worker (a parent-death signal) and is killed once the task is
cancelled (the driver died, or stopped the ranks after losing a worker), so no
late commit can race a new driver.
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

from pipeline.runtime.lifeline import tied
from pipeline.runtime.live import forward
from pipeline.runtime.workers import able_workers, live_workers
from trainer.host import free_port

POLL_S = 0.5  # how often a rank checks its task is still wanted, and the driver that its workers live


@dataclass(frozen=True)
class Placement:
    """The workers of one attempt's ranks (rank i on ``workers[i]``) and their rendezvous."""

    workers: list[str]  # worker addresses, by rank
    master: str  # rank 0's host
    port: int  # a free port on rank 0's host (0 for one rank: its store binds any free port, so no race)

    def ranks_on_host(self, rank: int) -> int:
        """How many of the ranks share ``rank``'s host (they share its cores)."""
        hosts = [urlparse(w).hostname for w in self.workers]
        return hosts.count(hosts[rank])


def place_ranks(client, ranks: int, resources: dict, wait_s: float = 0.0) -> Placement:
    """``ranks`` workers offering ``resources`` (waiting up to ``wait_s`` for enough of them), and a free port on
    the first one's host (with several ranks; one rank's store takes a port as it binds: 0)."""
    deadline = time.monotonic() + wait_s
    while len(fit := able_workers(client, resources)) < ranks and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if len(fit) < ranks:
        raise RuntimeError(f"cluster.train_ranks={ranks} with train_resources={resources}: only {len(fit)} "
                           "worker(s) qualify; start more workers or lower train_ranks")
    workers = fit[:ranks]
    port = client.run(free_port, workers=[workers[0]])[workers[0]] if ranks > 1 else 0
    return Placement(workers, urlparse(workers[0]).hostname, port)


def submit_ranks(client, task: Callable, args: list[tuple], placement: Placement, resources: dict,
                 key: str) -> list:
    """One ``task(*args[rank])`` per rank, pinned to its worker, keyed ``<key>-rank<rank>``; their futures."""
    return [client.submit(task, *args[rank], workers=[w], allow_other_workers=False, resources=resources or None,
                          pure=False, key=f"{key}-rank{rank}")
            for rank, w in enumerate(placement.workers)]


def wait_ranks(client, futures: list, workers: list[str]) -> list[str]:
    """Wait for the rank tasks (raising a rank's error); the pinned workers that left the cluster, if any."""
    from distributed import TimeoutError as WaitTimeout
    from distributed import wait

    while True:
        try:
            wait([f for f in futures if not f.done()], timeout=POLL_S, return_when="FIRST_COMPLETED")
        except WaitTimeout:
            pass
        for f in futures:
            if f.status == "error":
                f.result()  # raises the rank's error (the other ranks may wait for it forever)
        if all(f.done() for f in futures):
            client.gather(futures)  # raises if one was cancelled
            return []
        live = set(live_workers(client))
        if lost := [w for w in workers if w not in live]:
            return lost


def stop_ranks(client, futures: list, timeout_s: float = 60.0) -> None:
    """Cancel the rank tasks and wait until no worker runs one (their processes are killed)."""
    keys = [f.key for f in futures]
    client.cancel(futures)
    deadline = time.monotonic() + timeout_s
    while any(client.run(_held, keys).values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"train tasks {keys} still run {timeout_s:.0f} s after they were cancelled")
        time.sleep(POLL_S)


def _held(keys: list, dask_worker=None) -> list:
    return [k for k in keys if k in dask_worker.state.tasks]


def wanted() -> bool:
    """Whether the Dask task running this is still wanted (not once cancelled: its driver died or gave it up)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return True  # not in a Dask task
    ts = worker.state.tasks.get(worker.get_current_task())
    return ts is not None and ts.state in ("executing", "long-running")  # long-running: it seceded


def supervise(cmd: list[str], env: dict, log, emit, started: Callable | None = None,
              replies: Callable[[dict], None] | None = None) -> int | None:
    """Run ``cmd`` tied to this process and killed once this task is cancelled; its exit code (None: killed).

    Its output goes to ``log``, its step records to ``emit`` and its replies to ``replies`` as they come. With
    ``started``, its stdin is a pipe and ``started(proc)`` runs once it is started.
    """
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE if started else None, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=tied())
    reader = threading.Thread(target=forward, args=(proc.stdout, log, emit, replies), name="trainer-output",
                              daemon=True)
    reader.start()
    if started is not None:
        started(proc)
    try:
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                if not wanted():
                    return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
        proc.stdout.close()
        if proc.stdin is not None:
            proc.stdin.close()


def without_nanny_malloc(env) -> dict[str, str]:
    """The environment without the nanny's ``MALLOC_TRIM_THRESHOLD_``.

    Setting it also fixes glibc's mmap threshold, so every tensor above 128 KiB
    is mmapped and freed back at once: the trainer then spends half its time in
    page faults (measured: 2,903 -> 1,490 tokens/s, 3 -> 40 s of system time).
    """
    return {k: v for k, v in env.items() if k != "MALLOC_TRIM_THRESHOLD_"}
