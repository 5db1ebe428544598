"""Synthetic, schema-valid trajectory tables (vectorised): for demos, tests and benchmarks.

Groups of ``group_size`` episodes with lengths in ``[min_len, max_len]``;
observations repeat inside a group (episodes revisit states), token lists
have realistic lengths.

>>> steps, episodes = synthetic_round(round=0, groups=2, group_size=4, seed=0)
>>> episodes.height, steps["episode_id"].n_unique()
(8, 8)
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from storage.shards import conform


def _offsets(rng: np.random.Generator, n: int, mean_len: int) -> np.ndarray:
    lengths = rng.integers(max(1, mean_len // 2), mean_len * 3 // 2 + 1, size=n)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def _lists(offsets: np.ndarray, values: np.ndarray) -> pl.Series:
    return pl.from_arrow(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)))


def synthetic_round(round: int, groups: int, group_size: int = 8, min_len: int = 5, max_len: int = 50,
                    prompt_tokens: int = 64, response_tokens: int = 16, seed: int = 0,
                    first_group: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (steps, episodes) frames matching the ``steps`` and ``episodes`` schemas."""
    rng = np.random.default_rng(seed)
    n_eps = groups * group_size
    lengths = rng.integers(min_len, max_len + 1, size=n_eps)
    episode = np.repeat(np.arange(n_eps), lengths)
    n = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    step = (np.arange(n) - np.repeat(starts, lengths)).astype(np.int32)
    group = episode // group_size + first_group
    won = rng.random(n_eps) < 0.3
    last = np.zeros(n, dtype=bool)
    last[np.cumsum(lengths) - 1] = True
    reward = np.where(last & won[episode], 10.0, 0.0).astype(np.float32)
    state = rng.integers(0, 6, size=n)  # few states per step index: anchors repeat across episodes
    anchor = ((group.astype(np.uint64) << np.uint64(32)) | (step.astype(np.uint64) << np.uint64(8))
              | state.astype(np.uint64))
    steps = pl.DataFrame({
        "round": np.full(n, round, np.int32),
        "policy_version": np.full(n, round, np.int32),
        "group_id": group.astype(np.int64),
        "episode_id": (episode + first_group * group_size).astype(np.int64),
        "task_id": group,
        "step": step,
        "observation": state,
        "anchor_key": anchor,
        # true state: the location, whatever the step counter in the text says (anchors miss those revisits)
        "state_key": (group.astype(np.uint64) << np.uint64(32)) | state.astype(np.uint64),
        "admissible_key": state.astype(np.uint64),
        "prompt_ids": _lists(prompt := _offsets(rng, n, prompt_tokens), rng.integers(0, 32000, prompt[-1], np.int32)),
        "response_ids": _lists(resp := _offsets(rng, n, response_tokens), rng.integers(0, 32000, resp[-1], np.int32)),
        "response_logprobs": _lists(resp, -rng.random(resp[-1], dtype=np.float32)),
        "action": rng.integers(0, 6, size=n),
        "action_valid": rng.random(n) > 0.05,
        "reward": reward,
        "terminated": last & won[episode],
        "truncated": last & ~won[episode],
    }).with_columns(
        pl.format("task-{}", "task_id").alias("task_id"),
        pl.format("You arrive at loc {} (step {}).", "observation", "step").alias("observation"),
        pl.format("go to loc {}", "action").alias("action"),
    )
    episodes = pl.DataFrame({
        "round": np.full(n_eps, round, np.int32),
        "policy_version": np.full(n_eps, round, np.int32),
        "group_id": (np.arange(n_eps) // group_size + first_group).astype(np.int64),
        "episode_id": (np.arange(n_eps) + first_group * group_size).astype(np.int64),
        "task_id": np.arange(n_eps) // group_size + first_group,
        "score": np.where(won, 10.0, 0.0).astype(np.float32),
        "won": won,
        "length": lengths.astype(np.int32),
        "terminated": won,
        "truncated": ~won,
    }).with_columns(
        pl.format("task-{}", "task_id").alias("task_id"),
        pl.when(pl.col("truncated")).then(pl.lit("max_steps")).alias("truncation_reason"),
    )
    return (pl.from_arrow(conform(steps, "steps", "synthetic steps")),
            pl.from_arrow(conform(episodes, "episodes", "synthetic episodes")))
