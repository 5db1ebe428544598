"""The train stage on the Dask cluster: one ``python -m trainer`` process per rank.

Each rank is a Dask task pinned to its own worker (with ``train_resources``,
e.g. ``GPU=1``); it starts the trainer as a child process with the
torch.distributed rendezvous set from the worker list (rank 0's host is
``MASTER_ADDR``), so every round trains in fresh processes that free their
memory when done. The trainer commits the round's ``checkpoint`` stage itself
(rank 0) and keeps DeepSpeed state for resume until then. Each rank's torch
threads are sized explicitly (``trainer.num_threads``, else the host's cores
shared by the ranks on it): a process a Dask task starts would otherwise inherit
the nanny's ``OMP_NUM_THREADS=1``.

The driver says when the ranks start; rank 0's start-up notes (imports; rows,
model and DeepSpeed engine; round-start log-probs) and each optimizer step's
metrics (loss, KL, entropy, grad norm, clip fraction, response length, tokens/s,
MFU on GPU) reach the driver's console as they happen (``pipeline.runtime.live``),
the steps numbered on their axis (``pipeline.records.axis_start``) and handed to
``on_step`` (the experiment trackers).

No trainer outlives what started it (``pipeline.runtime.ranks``: placement,
liveness polling, cancellation). A trainer keeps its temporary files in its
rank's own folder (``TMPDIR``), removed once it ends, even killed.
"""
from __future__ import annotations

import os
import sys
import uuid
from typing import Callable

import yaml

import storage
from pipeline.config import to_dict
from pipeline.records import CHECKPOINT_STAGE, axis_start, read_metrics, step_axis
from pipeline.run_config import ClusterConfig
from pipeline.runtime.keys import key_prefix
from pipeline.runtime.live import LiveSteps, emitter
from pipeline.runtime.ranks import place_ranks, stop_ranks, submit_ranks, supervise, wait_ranks, without_nanny_malloc
from pipeline.runtime.scratch import scratch
from pipeline.runtime.workers import resolve_ranks
from trainer.config import TrainerConfig
from trainer.host import thread_count, thread_env

TRAIN_ATTEMPTS = 3  # attempts of a round's training when pinned workers leave the cluster
WORKER_WAIT_S = 120.0  # how long a new attempt waits for enough workers (a killed one restarting)


def train(client, run: storage.Run, round: int, policy: str, ref: str | None, cfg: TrainerConfig,
          cluster: ClusterConfig, on_step: Callable[[dict], None] | None = None) -> None:
    """Train round ``round`` on the cluster (a no-op when its checkpoint is committed).

    A committed checkpoint it starts from is checked against its manifest here
    first (each rank checks again before loading), so a bad file is named
    before any rank starts.

    Each rank is pinned to a worker. A pinned worker that leaves the cluster
    (killed, restarted by its nanny under a new address) would leave its task
    waiting forever: the other ranks are stopped and the round is trained again
    on the live workers (resuming from the trainer's saved state), up to
    ``TRAIN_ATTEMPTS`` times.
    """
    if run.is_committed(round, CHECKPOINT_STAGE):
        return
    storage.verify_stage_dir(policy)
    offset = axis_start(step_axis(run, read_metrics(run)), round)
    ranks = resolve_ranks(client, cluster.train_ranks, cluster.train_resources)  # every attempt: the same world
    ref = ref if cfg.kl_coef > 0 else None
    for attempt in range(TRAIN_ATTEMPTS):
        if run.is_committed(round, CHECKPOINT_STAGE):
            return
        tag = uuid.uuid4().hex[:8]  # a key of its own: never the cancelled task of a dead driver or attempt
        print(f"train: starting {ranks} rank(s) (imports, model load, DeepSpeed engine) ...", flush=True)
        at = place_ranks(client, ranks, cluster.train_resources, wait_s=WORKER_WAIT_S if attempt else 0.0)
        args = [(run.uri, round, policy, ref, to_dict(cfg), rank, ranks, at.master, at.port, at.ranks_on_host(rank),
                 tag, offset) for rank in range(ranks)]
        futures = submit_ranks(client, train_rank, args, at, cluster.train_resources,
                               key_prefix("train", run.id, round, tag))
        with LiveSteps(client, tag, on_step):
            lost = wait_ranks(client, futures, at.workers)
        if not lost:
            return
        print(f"warning: round {round}: train worker(s) {lost} left the cluster; stopping the other ranks and "
              "training again on the live workers", file=sys.stderr, flush=True)
        stop_ranks(client, futures)
    raise RuntimeError(f"round {round}: train workers left the cluster during {TRAIN_ATTEMPTS} attempts in a row")


def train_rank(run_uri: str, round: int, policy: str, ref: str | None, trainer: dict, rank: int, world: int,
               master: str, port: int, ranks_on_host: int = 1, tag: str = "", offset: int = 0) -> None:
    """One rank: run the trainer process; raise with its log's tail if it fails or is stopped.

    Its step records go to the driver as events tagged ``tag``, at global steps after ``offset``.
    """
    threads = thread_count(trainer["num_threads"], ranks_on_host)
    with scratch(run_uri) as tmp:
        cfg_path, log_path = os.path.join(tmp, "trainer.yaml"), os.path.join(tmp, "log")
        with open(cfg_path, "w") as fh:
            yaml.safe_dump({"trainer": trainer}, fh)
        cmd = [sys.executable, "-m", "trainer", "--run", run_uri, f"--round={round}", "--policy", policy,
               "--config", cfg_path, f"--threads={threads}", "--live"] + (["--ref", ref] if ref else [])
        rendezvous = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "MASTER_ADDR": master,
                      "MASTER_PORT": str(port)}
        env = without_nanny_malloc(os.environ) | thread_env(threads) | rendezvous | {"TMPDIR": tmp}
        with open(log_path, "w") as log:
            code = supervise(cmd, env, log, emitter(round, tag, offset))
        if code != 0:
            tail = open(log_path).read()[-3000:]
            how = "was stopped: its task was cancelled" if code is None else f"exited with {code}"
            raise RuntimeError(f"trainer rank {rank} of round {round} {how}:\n{tail}")
