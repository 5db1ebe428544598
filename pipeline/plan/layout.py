"""Who runs what in a round on a described cluster: rollout tasks, train ranks and the batch arithmetic.

The cluster is N identical workers of G GPUs each: a worker offers ``{"GPU": G}`` (a resource other than
GPU is taken as offered). The counts follow the driver: ``pipeline.runtime.workers.spread`` cuts the
collect and evaluate tasks, ``cluster.train_ranks`` resolves as ``resolve_ranks`` does, and the trainer
cuts a round's rows as ``trainer.batches.make_plan`` does.

>>> tasks(16, 8, groups_per_batch=16, workers=8)
Tasks(groups=16, group_size=8, per_task=2, count=8)
>>> b = batches(TrainerConfig(mini_batch_size=256, micro_batch_size=8), 8, rows=(128, 6400))
>>> b.grad_accum, b.optimizer_steps
(4, (1, 25))
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import ConfigError
from pipeline.run_config import RunConfig
from pipeline.runtime.workers import check_batches, spread
from trainer.config import TrainerConfig


@dataclass(frozen=True)
class Cluster:
    """The workers the plan is for."""

    workers: int
    gpus_per_worker: int
    gpu_memory: int  # bytes of one GPU

    def offering(self, resources: dict) -> int:
        """How many workers offer ``resources`` (all of them for ``{}``)."""
        return self.workers if resources.get("GPU", 0) <= self.gpus_per_worker else 0


@dataclass(frozen=True)
class Tasks:
    """A stage's episode groups cut into Dask tasks."""

    groups: int
    group_size: int
    per_task: int  # groups per task
    count: int  # tasks

    @property
    def episodes_per_task(self) -> int:
        """Episodes one task plays at once (in lock-step)."""
        return self.per_task * self.group_size


def tasks(groups: int, group_size: int, groups_per_batch: int, workers: int) -> Tasks:
    per = spread(groups, groups_per_batch, workers)
    return Tasks(groups, group_size, per, math.ceil(groups / per))


def train_ranks(cfg: RunConfig, cluster: Cluster) -> tuple[int, str]:
    """(ranks, how they were counted) for ``cluster.train_ranks`` (as ``resolve_ranks``; 0: no worker offers
    ``train_resources``)."""
    c = cfg.cluster
    if c.train_ranks != "auto":
        return int(c.train_ranks), ""
    if not c.train_resources:
        return 1, ""
    n = cluster.offering(c.train_resources)
    return n, f" (cluster.train_ranks=auto: {n} worker(s) offer {c.train_resources})"


def batch_sections(cfg: RunConfig) -> dict[str, tuple[int, int]]:
    """``name -> (mini_batch_size, micro_batch_size)`` of every training the run does (the driver's check)."""
    sections = {"trainer": (cfg.trainer.mini_batch_size, cfg.trainer.micro_batch_size)}
    if cfg.warm_start is not None and cfg.warm_start.enabled:
        sections["warm_start"] = (cfg.warm_start.mini_batch_size, cfg.warm_start.micro_batch_size)
    return sections


def batch_problem(cfg: RunConfig, ranks: int, how: str) -> str | None:
    """``check_batches``' refusal when ``ranks`` ranks cannot share the mini-batches, else None."""
    try:
        check_batches(batch_sections(cfg), ranks, how)
    except ConfigError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Batches:
    """A round's training: rows, optimizer steps and the micro-batches of each rank."""

    ranks: int
    mini_batch: int  # rows per optimizer step, all ranks together
    micro_batch: int  # rows per forward/backward on one rank
    grad_accum: int  # micro-batches per optimizer step on each rank (0: the ranks cannot share the batch)
    epochs: int
    rows: tuple[int, int]  # rows of a round: at least (one step per episode), at most (env.max_steps each)

    @property
    def optimizer_steps(self) -> tuple[int, int]:
        """Optimizer steps per round for the fewest and the most rows: ppo_epochs x ceil(rows / mini_batch)."""
        return tuple(self.epochs * max(1, math.ceil(n / self.mini_batch)) for n in self.rows)


def batches(cfg: TrainerConfig, ranks: int, rows: tuple[int, int]) -> Batches:
    shared = ranks > 0 and cfg.mini_batch_size % (cfg.micro_batch_size * ranks) == 0
    return Batches(ranks, cfg.mini_batch_size, cfg.micro_batch_size,
                   cfg.grad_accum_steps(ranks) if shared else 0, cfg.ppo_epochs, rows)


def round_rows(cfg: RunConfig) -> tuple[int, int]:
    """Step rows a round collects: one per episode at least, ``env.max_steps`` per episode at most."""
    episodes = cfg.tasks_per_round * cfg.rollout.group_size
    return episodes, episodes * cfg.rollout.env.max_steps
