"""The train stage on the Dask cluster: one ``python -m trainer`` process per rank.

Each rank is a Dask task pinned to its own worker (with ``train_resources``,
e.g. ``GPU=1``). With ``trainer.resident`` (the default) each rank's trainer
process is started once, at the run's first train stage, as that round's
trainer with ``--serve``, and stays up with its engine in memory
(``trainer.resident``): a holder task per rank runs it
(``pipeline.runtime.resident``) and each later round's rank task sends it the
round.
A resident process that died (or whose worker left) is started again, all ranks
together, and the round trained again from what is on disk. Without it, each
rank task starts the trainer for this round alone (``train_rank``), a fresh
process that frees its memory when done. Either way the torch.distributed
rendezvous is set from the worker list (rank 0's host is ``MASTER_ADDR``); the
trainer commits the round's ``checkpoint`` stage itself (rank 0) and keeps
DeepSpeed state for resume until then. Each rank's torch threads are sized
explicitly (``trainer.num_threads``, else the host's cores shared by the ranks
on it): a process a Dask task starts would otherwise inherit the nanny's
``OMP_NUM_THREADS=1``.

The driver says when the ranks start; rank 0's start-up notes (imports; rows,
model and DeepSpeed engine; round-start log-probs) and each optimizer step's
metrics (loss, KL, entropy, grad norm, clip fraction, response length, tokens/s,
MFU on GPU) reach the driver's console as they happen (``pipeline.runtime.live``),
the steps numbered on their axis (``pipeline.records.axis_start``) and handed to
``on_step`` (the experiment trackers).

No trainer outlives what started it (``pipeline.runtime.ranks``: placement,
liveness polling, cancellation; a resident one lives as long as the driver's
client holds its holder task). A trainer keeps its temporary files in its
rank's own folder (``TMPDIR``, with its ``trainer.yaml`` and log), removed once
it ends, even killed.
"""
from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from typing import Callable

import yaml

import storage
from pipeline.config import to_dict
from pipeline.records import CHECKPOINT_STAGE, axis_start, read_metrics, step_axis
from pipeline.run_config import ClusterConfig
from pipeline.runtime import resident
from pipeline.runtime.keys import key_prefix
from pipeline.runtime.live import LiveSteps, emitter
from pipeline.runtime.ranks import place_ranks, stop_ranks, submit_ranks, supervise, wait_ranks, without_nanny_malloc
from pipeline.runtime.scratch import scratch
from pipeline.runtime.workers import resolve_ranks
from trainer.config import TrainerConfig
from trainer.host import thread_count, thread_env

TRAIN_ATTEMPTS = 3  # attempts of a round's training when pinned workers leave the cluster or trainers are killed
WORKER_WAIT_S = 120.0  # how long a new attempt waits for enough workers (a killed one restarting)
PEERS_S = 5.0  # after a rank's error, how long to wait for the others' (one of them may have been killed)
_RESIDENTS: dict[tuple[str, str], resident.Residents] = {}  # the driver's resident ranks, by (client id, run URI)


@dataclass(frozen=True)
class Job:
    """A round's training as the driver asks for it."""

    run: storage.Run
    round: int
    policy: str
    ref: str | None
    cfg: TrainerConfig
    cluster: ClusterConfig
    ranks: int
    offset: int  # the run's global step before this round's first
    on_step: Callable[[dict], None] | None  # gets each step's record (the experiment trackers)


def train(client, run: storage.Run, round: int, policy: str, ref: str | None, cfg: TrainerConfig,
          cluster: ClusterConfig, on_step: Callable[[dict], None] | None = None) -> None:
    """Train round ``round`` on the cluster (a no-op when its checkpoint is committed).

    A committed checkpoint it starts from is checked against its manifest here
    first (each rank checks again before loading), so a bad file is named
    before any rank starts.

    Each rank is pinned to a worker. A pinned worker that leaves the cluster
    (killed, restarted by its nanny under a new address) would leave its task
    waiting forever, and a resident trainer killed by a signal leaves its peers
    waiting: the other ranks are stopped and the round is trained again on the
    live workers (resuming from the trainer's saved state), up to
    ``TRAIN_ATTEMPTS`` times.
    """
    if run.is_committed(round, CHECKPOINT_STAGE):
        return
    storage.verify_stage_dir(policy)
    offset = axis_start(step_axis(run, read_metrics(run)), round)
    ranks = resolve_ranks(client, cluster.train_ranks, cluster.train_resources)  # every attempt: the same world
    job = Job(run, round, policy, ref if cfg.kl_coef > 0 else None, cfg, cluster, ranks, offset, on_step)
    attempt_once = _resident_attempt if cfg.resident else _cold_attempt
    for attempt in range(TRAIN_ATTEMPTS):
        if run.is_committed(round, CHECKPOINT_STAGE):
            return
        tag = uuid.uuid4().hex[:8]  # a key of its own: never the cancelled task of a dead driver or attempt
        why = attempt_once(client, job, tag, WORKER_WAIT_S if attempt else 0.0)
        if why is None:
            return
        print(f"warning: round {round}: {why}; stopping the other ranks and training again on the live workers",
              file=sys.stderr, flush=True)
    raise RuntimeError(f"round {round}: training was cut off {TRAIN_ATTEMPTS} times in a row (last: {why})")


def _cold_attempt(client, job: Job, tag: str, wait_s: float) -> str | None:
    """Train with a fresh process per rank; why it must be trained again (None: done)."""
    _announce(job.ranks)
    at = place_ranks(client, job.ranks, job.cluster.train_resources, wait_s=wait_s)
    args = [(job.run.uri, job.round, job.policy, job.ref, to_dict(job.cfg), rank, job.ranks, at.master, at.port,
             at.ranks_on_host(rank), tag, job.offset) for rank in range(job.ranks)]
    futures = submit_ranks(client, train_rank, args, at, job.cluster.train_resources,
                           key_prefix("train", job.run.id, job.round, tag))
    with LiveSteps(client, tag, job.on_step):
        lost = wait_ranks(client, futures, at.workers)
    if not lost:
        return None
    stop_ranks(client, futures)
    return f"train worker(s) {lost} left the cluster"


def _resident_attempt(client, job: Job, tag: str, wait_s: float) -> str | None:
    """Train on the resident ranks (started first when needed); why it must be trained again (None: done).

    Any failure stops the group: a rank left mid-round holds a half-trained engine.
    """
    group, started = _residents(client, job, tag, wait_s)
    if not started:
        print(f"train: the round goes to the {job.ranks} resident rank(s) ...", flush=True)
    args = [(key, job.round, job.policy, job.ref, to_dict(job.cfg), tag, job.offset, started) for key in group.keys]
    futures = submit_ranks(client, resident_round, args, group.placement, job.cluster.train_resources,
                           key_prefix("train", job.run.id, job.round, tag))
    try:
        with LiveSteps(client, tag, job.on_step):
            lost = wait_ranks(client, futures, group.placement.workers)
    except Exception:
        why = _killed(futures)
        _drop(client, job, group, futures)
        if why is None:
            raise
        return why
    if not lost:
        return None
    _drop(client, job, group, futures)
    return f"train worker(s) {lost} left the cluster"


def _drop(client, job: Job, group: resident.Residents, futures: list) -> None:
    """Stop this round's rank tasks and the resident group."""
    stop_ranks(client, futures)
    group.stop(client)
    _RESIDENTS.pop((client.id, job.run.uri), None)


def _announce(ranks: int) -> None:
    print(f"train: starting {ranks} rank(s) (imports, model load, DeepSpeed engine) ...", flush=True)


def _killed(futures: list) -> str | None:
    """Why a rank failed when a rank's resident process was killed (its peers' errors follow from it), else None."""
    from distributed import TimeoutError as WaitTimeout
    from distributed import wait

    try:
        wait(futures, timeout=PEERS_S)
    except WaitTimeout:
        pass
    gone = [f.exception() for f in futures if f.status == "error" and isinstance(f.exception(), resident.ResidentGone)]
    return str(gone[0]) if gone else None


def _residents(client, job: Job, tag: str, wait_s: float) -> tuple[resident.Residents, bool]:
    """The run's resident ranks on this client: the running group when it still serves ``job``, else a new one
    started with ``job`` as its first request; and whether it was started so."""
    spec = (job.ranks, job.cfg.num_threads)
    group = _RESIDENTS.pop((client.id, job.run.uri), None)
    if group is not None and group.spec == spec and group.alive(client):
        _RESIDENTS[(client.id, job.run.uri)] = group
        return group, False
    if group is not None:
        if group.spec == spec:
            print(f"warning: round {job.round}: a resident trainer ended since the last round; starting the ranks "
                  "again", file=sys.stderr, flush=True)
        group.stop(client)
        wait_s = max(wait_s, WORKER_WAIT_S)  # its worker may be restarting
    _announce(job.ranks)
    at = place_ranks(client, job.ranks, job.cluster.train_resources, wait_s=wait_s)
    args = [(job.run.uri, job.round, job.policy, job.ref, to_dict(job.cfg), rank, job.ranks, at.master, at.port,
             at.ranks_on_host(rank), tag, job.offset) for rank in range(job.ranks)]
    group = resident.start(client, hold_rank, args, at, key_prefix("trainer", job.run.id), spec)
    _RESIDENTS[(client.id, job.run.uri)] = group
    return group, True


def train_rank(run_uri: str, round: int, policy: str, ref: str | None, trainer: dict, rank: int, world: int,
               master: str, port: int, ranks_on_host: int = 1, tag: str = "", offset: int = 0) -> None:
    """One rank: run the trainer process; raise with its log's tail if it fails or is stopped.

    Its step records go to the driver as events tagged ``tag``, at global steps after ``offset``.
    """
    threads = thread_count(trainer["num_threads"], ranks_on_host)
    with scratch(run_uri) as tmp:
        cmd, log_path = _command(run_uri, round, policy, ref, _write_config(tmp, trainer), threads), f"{tmp}/log"
        with open(log_path, "w") as log:
            code = supervise(cmd, _rank_env(rank, world, master, port, threads, tmp), log,
                             emitter(round, tag, offset))
        if code != 0:
            tail = open(log_path).read()[-3000:]
            how = "was stopped: its task was cancelled" if code is None else f"exited with {code}"
            raise RuntimeError(f"trainer rank {rank} of round {round} {how}:\n{tail}")


def hold_rank(key: str, run_uri: str, round: int, policy: str, ref: str | None, trainer: dict, rank: int, world: int,
              master: str, port: int, ranks_on_host: int, tag: str, offset: int) -> int | None:
    """A resident rank's holder task: ``train_rank``'s trainer with ``--serve``, for as long as the task is
    wanted."""
    threads = thread_count(trainer["num_threads"], ranks_on_host)
    with scratch(run_uri) as tmp:
        cmd = _command(run_uri, round, policy, ref, _write_config(tmp, trainer), threads) + ["--serve"]
        return resident.hold(key, cmd, _rank_env(rank, world, master, port, threads, tmp), tmp,
                             emitter(round, tag, offset))


def resident_round(key: str, round: int, policy: str, ref: str | None, trainer: dict, tag: str, offset: int,
                   started: bool) -> None:
    """One rank of a round on its resident process: this round's settings into its ``trainer.yaml``, then the
    request, unless the process was ``started`` with it; its step records go to the driver as ``train_rank``'s
    do."""
    held, request = resident.held(key), None
    if not started:
        _write_config(held.folder, trainer)
        request = {"round": round, "policy": policy, "ref": ref}
    held.ask(request, emitter(round, tag, offset))


def _command(run_uri: str, round: int, policy: str, ref: str | None, cfg_path: str, threads: int) -> list[str]:
    return [sys.executable, "-m", "trainer", "--run", run_uri, f"--round={round}", "--policy", policy, "--config",
            cfg_path, f"--threads={threads}", "--live"] + (["--ref", ref] if ref else [])


def _write_config(folder: str, trainer: dict) -> str:
    path = os.path.join(folder, "trainer.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump({"trainer": trainer}, fh)
    return path


def _rank_env(rank: int, world: int, master: str, port: int, threads: int, tmp: str) -> dict[str, str]:
    rendezvous = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "MASTER_ADDR": master,
                  "MASTER_PORT": str(port)}
    return without_nanny_malloc(os.environ) | thread_env(threads) | rendezvous | {"TMPDIR": tmp}
