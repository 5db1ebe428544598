"""The Dask task: play one batch of groups and write it as one steps shard + one episodes shard.

A worker process keeps its policy (``acquire_policy``; across rounds too, each
new checkpoint loaded in place) and its env pool between tasks of a round, and
runs one rollout task at a time (the pool and the accelerator are not shareable).
Shard names depend on the batch index only, so a retried task replaces its
files instead of adding rows.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass

import polars as pl

from storage import Run, ShardInfo, write_shard

from pipeline.envs.pool import EnvPool
from pipeline.policy.process import acquire_policy, release_policy
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.worker import BatchStats, Group, mix_seed, play_batch

_TASK_LOCK = threading.Lock()
_POOL: dict = {"key": None, "pool": None}


@dataclass(frozen=True)
class BatchResult:
    """What a rollout task hands back to ``collect``."""

    batch: int  # batch index in the round
    steps: ShardInfo  # the written steps shard
    episodes: ShardInfo  # the written episodes shard
    stats: BatchStats  # counts, timings and error lines
    wall_s: float  # seconds the task ran


def shard_name(batch: int) -> str:
    """Deterministic shard name of a batch (the same in both tables).

    >>> shard_name(7)
    'batch-000007'
    """
    return f"batch-{batch:06d}"


def _pool(config: RolloutConfig) -> EnvPool:
    key = (config.env, config.pool)
    if _POOL["key"] != key:
        if _POOL["pool"] is not None:
            _POOL["pool"].close()
        _POOL.update(key=key, pool=EnvPool(config.env, config.pool))
    return _POOL["pool"]


DAEMON_ERROR = ("rollout tasks run in daemonic Dask worker processes, which may not start env worker processes; "
                "set the Dask config distributed.worker.daemon: False before starting the cluster "
                "(DASK_DISTRIBUTED__WORKER__DAEMON=False for `dask worker`)")


def is_daemon() -> bool:
    """Whether this process is daemonic (then it may not start env or engine processes)."""
    return multiprocessing.current_process().daemon


def play_groups(policy_path: str, groups: list[Group], config: RolloutConfig, round: int, policy_version: int,
                batch: int, seed_round: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame, BatchStats]:
    """Play ``groups`` (batch ``batch`` of a round) with this process's policy and env pool; write nothing.

    The sampling seed depends on ``(sampling.seed, seed_round (default: round), batch)`` only.
    Used by ``rollout_batch`` and by evaluation tasks.
    """
    if is_daemon():
        raise RuntimeError(DAEMON_ERROR)
    with _TASK_LOCK:
        start = time.perf_counter()
        policy, how = acquire_policy(policy_path, config.policy, config.sampling)
        load_s = time.perf_counter() - start
        seed = mix_seed(config.sampling.seed, round if seed_round is None else seed_round, batch)
        steps, episodes, stats = play_batch(policy, _pool(config), groups, config, round, policy_version, seed)
        stats.policy_load_s, stats.engine = load_s, how
        return steps, episodes, stats


def rollout_batch(run: Run, round: int, policy_version: int, policy_path: str, batch: int, groups: list[Group],
                  config: RolloutConfig) -> BatchResult:
    """Play ``groups`` with the checkpoint at ``policy_path`` and write their shards; see ``collect``."""
    start = time.perf_counter()
    steps, episodes, stats = play_groups(policy_path, groups, config, round, policy_version, batch)
    name = shard_name(batch)
    return BatchResult(batch, write_shard(run, round, "steps", steps, name),
                       write_shard(run, round, "episodes", episodes, name), stats, time.perf_counter() - start)


def release_resources(mode: str) -> str:
    """Run on every worker after a round: free the policy (``sleep``/``restart``/``none``), stop the env pool."""
    with _TASK_LOCK:
        release_policy(mode)
        if _POOL["pool"] is not None:
            _POOL["pool"].close()
            _POOL.update(key=None, pool=None)
    return mode
