"""The evaluate stage: play held-out tasks with the round's new checkpoint, commit the ``evaluation`` table.

Sampling runs at ``evaluation.temperature`` with ``evaluation.group_size``
episodes per task, on the same rollout tasks and env pools as collect, with the
same sampling seeds at every evaluation of a run (a fixed held-out set: rounds
differ only by their policy); only the per-episode outcome is kept
(``storage.schemas.EVALUATION``). ``play_held_out`` plays without committing
(``python -m pipeline.evaluate_checkpoint``, evaluation-only).
"""
from __future__ import annotations

import dataclasses

import polars as pl
from tqdm.auto import tqdm

import storage
from pipeline.config import config_hash
from pipeline.records import EVALUATION_STAGE
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.dispatch import make_groups
from pipeline.rollout.task import play_groups, release_resources
from pipeline.run_config import EvalConfig
from pipeline.runtime.console import bars_shown
from pipeline.runtime.keys import key_prefix
from pipeline.runtime.workers import able_workers, spread

EVAL_SEED_ROUND = -2  # every evaluation samples with the same seeds: rounds differ only by their policy


def eval_rollout(rollout: RolloutConfig, cfg: EvalConfig) -> RolloutConfig:
    """The collect settings, with the evaluation's temperature and group size."""
    sampling = dataclasses.replace(rollout.sampling, temperature=cfg.temperature)
    return dataclasses.replace(rollout, group_size=cfg.group_size, sampling=sampling)


def _play(policy: str, groups, rollout: RolloutConfig, round: int, version: int, batch: int) -> pl.DataFrame:
    _, episodes, _ = play_groups(policy, groups, rollout, round, version, batch, seed_round=EVAL_SEED_ROUND)
    return episodes.select("round", "policy_version", "task_id", "episode_id", "won", "score", "length")


def play_held_out(client, policy: str, tasks: list[str], rollout: RolloutConfig, cfg: EvalConfig,
                  round: int, run_id: str) -> pl.DataFrame:
    """Play ``cfg.tasks`` of ``tasks`` with ``policy`` (``cfg.group_size`` episodes each); the episodes' outcomes.

    ``run_id`` names the run in the tasks' keys (``pipeline.runtime.keys``).
    """
    rollout = eval_rollout(rollout, cfg)
    groups = make_groups(tasks[: cfg.tasks])
    per = spread(len(groups), rollout.groups_per_batch, len(able_workers(client, rollout.resources)))
    keys = key_prefix("evaluate", run_id, round)
    futures = [client.submit(_play, policy, groups[i:i + per], rollout, round, round + 1, i // per,
                             resources=rollout.resources or None, key=f"{keys}-b{i // per}")
               for i in range(0, len(groups), per)]
    table = _gather(futures, len(groups) * rollout.group_size, rollout.progress)
    client.run(release_resources, rollout.policy.free_between_rounds)
    return table


def _gather(futures: list, episodes: int, progress: bool | str) -> pl.DataFrame:
    """The tasks' outcome tables as one, by episode, with a progress bar of the episodes played."""
    from distributed import as_completed

    tables = []
    with tqdm(total=episodes, unit="episode", desc="evaluate", disable=not bars_shown(progress)) as bar:
        for fut in as_completed(futures):
            tables.append(fut.result())
            bar.update(tables[-1].height)
    return pl.concat(tables).sort("episode_id")


def evaluate(client, run: storage.Run, round: int, policy: str, tasks: list[str], rollout: RolloutConfig,
             cfg: EvalConfig) -> float | None:
    """Evaluate round ``round``'s checkpoint on ``tasks``; the success rate (None when disabled or done)."""
    if run.is_committed(round, EVALUATION_STAGE) or not tasks or cfg.tasks == 0:
        return None
    table = play_held_out(client, policy, tasks, rollout, cfg, round, run.id)
    run.begin(round, EVALUATION_STAGE)
    info = storage.write_shard(run, round, "evaluation", table, "evaluation")
    run.commit(round, EVALUATION_STAGE, [info], config_hash(cfg), round + 1)
    return float(table["won"].mean())
