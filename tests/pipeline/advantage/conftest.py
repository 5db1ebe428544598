"""Fixtures of the advantage engine's tests: builders of small step frames."""
from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from storage.schemas import STEPS

# Three episodes start from state 1.
# ep 0: 1 -> 2 (reward 1); ep 1: 1 -> 3 -> 2 (reward 1); ep 2: 1 -> 3 (reward 0).
SHARED_START = [
    (0, 0, 0, 0.0, 1),
    (0, 0, 1, 1.0, 2),
    (0, 1, 0, 0.0, 1),
    (0, 1, 1, 0.0, 3),
    (0, 1, 2, 1.0, 2),
    (0, 2, 0, 0.0, 1),
    (0, 2, 1, 0.0, 3),
]


def build_frame(rows: list[tuple], **extra: list) -> pl.DataFrame:
    """Steps from (group_id, episode_id, step, reward, anchor_key[, action_valid]) tuples."""
    rows = [r if len(r) == 6 else (*r, True) for r in rows]
    columns = list(zip(*rows)) if rows else [[]] * 6
    return pl.DataFrame(
        {
            "group_id": pl.Series(columns[0], dtype=pl.Int64),
            "episode_id": pl.Series(columns[1], dtype=pl.Int64),
            "step": pl.Series(columns[2], dtype=pl.Int32),
            "reward": pl.Series(columns[3], dtype=pl.Float32),
            "anchor_key": pl.Series(columns[4], dtype=pl.UInt64),
            "action_valid": pl.Series(columns[5], dtype=pl.Boolean),
            **extra,
        }
    )


def build_steps_table(df: pl.DataFrame) -> pa.Table:
    """A full ``storage.schemas.STEPS`` table around the scalar columns of ``df`` (token columns filled in).

    ``state_key`` and ``admissible_key`` are taken from ``df`` when it has them, else null.
    """
    absent = [pl.lit(None, pl.UInt64).alias(c) for c in ("state_key", "admissible_key") if c not in df.columns]
    full = df.with_columns(
        *absent,
        pl.lit(0, pl.Int32).alias("round"),
        pl.lit(0, pl.Int32).alias("policy_version"),
        pl.format("task-{}", pl.col("group_id")).alias("task_id"),
        pl.format("state {}", pl.col("anchor_key")).alias("observation"),
        pl.concat_list(pl.col("group_id").cast(pl.Int32), pl.col("step")).alias("prompt_ids"),
        pl.concat_list(pl.col("episode_id").cast(pl.Int32)).alias("response_ids"),
        pl.concat_list(pl.col("reward") - 1.0).alias("response_logprobs"),
        pl.lit("go to desk 1").alias("action"),
        pl.lit(False).alias("terminated"),
        pl.lit(False).alias("truncated"),
    )
    return full.select(STEPS.names).to_arrow().cast(STEPS)


@pytest.fixture
def frame():
    """``frame(rows, **extra)``: steps from (group_id, episode_id, step, reward, anchor_key[, action_valid])."""
    return build_frame


@pytest.fixture
def steps_table():
    """``steps_table(df)``: a full storage steps table around df's scalar columns."""
    return build_steps_table


@pytest.fixture
def shared_start():
    """The SHARED_START group as a frame."""
    return build_frame(SHARED_START)
