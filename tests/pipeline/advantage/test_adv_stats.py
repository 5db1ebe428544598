"""Per-group anchor statistics (storage.schemas.ANCHOR_STATS)."""
from __future__ import annotations

import math

import polars as pl
import pytest

from pipeline.advantage import AdvantageConfig, AdvantageInputError, anchor_groups, anchor_stats, compute_advantages
from pipeline.advantage.stats import anchor_tables
from storage.schemas import ANCHOR_STATS
from storage.synthetic import synthetic_round

EPS = 1e-6


@pytest.fixture
def advantages(frame, shared_start):
    steps = pl.concat([shared_start, frame([(1, 3, 0, 0.0, 1)])])
    steps = steps.with_columns(pl.lit(2, pl.Int32).alias("round"), pl.format("task-{}", "group_id").alias("task_id"))
    return compute_advantages(steps, AdvantageConfig(gamma=0.5, episode_stats="episodes"))


def test_anchor_stats_values(advantages):
    stats = anchor_stats(advantages)
    assert stats.columns == ANCHOR_STATS.names
    assert stats.to_arrow().cast(ANCHOR_STATS).schema.equals(ANCHOR_STATS)
    win, lose = (1 / 3) / (math.sqrt(1 / 3) + EPS), (2 / 3) / (math.sqrt(1 / 3) + EPS)
    a1, a3 = 0.25 / (0.25 + EPS), 0.25 / (math.sqrt(0.125) + EPS)
    first, second = stats.rows(named=True)
    assert {k: first[k] for k in ("round", "group_id", "task_id", "steps", "episodes", "anchor_groups")} == {
        "round": 2, "group_id": 0, "task_id": "task-0", "steps": 7, "episodes": 3, "anchor_groups": 3
    }
    assert first["anchored_share"] == 1.0 and first["largest_anchor_group"] == 3
    assert first["mean_abs_adv_episode"] == pytest.approx((5 * win + 2 * lose) / 7, abs=1e-12)
    assert first["mean_abs_adv_step"] == pytest.approx((2 * a1 + 2 * a3) / 7, abs=1e-12)
    assert first["success_rate"] == pytest.approx(2 / 3)
    assert second == {
        "round": 2, "group_id": 1, "task_id": "task-1", "steps": 1, "episodes": 1, "anchor_groups": 1,
        "anchored_share": 0.0, "largest_anchor_group": 1, "mean_abs_adv_episode": 0.0, "mean_abs_adv_step": 0.0,
        "success_rate": 0.0, "pure_share": None, "impure_step_share": None, "states_per_anchor_group": None,
        "revisit_steps": None, "missed_revisit_share": None,  # these steps have no state_key
    }


def test_won_column_overrides_score(advantages):
    won = advantages.with_columns((pl.col("episode_id") == 2).alias("won"))
    assert anchor_stats(won)["success_rate"].to_list() == pytest.approx([1 / 3, 0.0])


def test_lazy_in_lazy_out(advantages):
    lazy = anchor_stats(advantages.lazy())
    assert isinstance(lazy, pl.LazyFrame) and lazy.collect().equals(anchor_stats(advantages))


def test_empty(advantages):
    assert anchor_stats(advantages.clear()).height == 0


def test_missing_columns(advantages):
    with pytest.raises(AdvantageInputError, match=r"lack column\(s\) \['task_id'\]"):
        anchor_stats(advantages.drop("task_id"))


def test_one_task_per_group(advantages):
    mixed = advantages.with_columns(pl.format("task-{}", "episode_id").alias("task_id"))
    with pytest.raises(AdvantageInputError, match=r"column 'task_id': group_id\(s\) \[0\] hold several task ids"):
        anchor_stats(mixed)


def test_anchor_tables_equal_the_two_tables_computed_apart():
    """What a shard task writes (one sort, one pass over the anchor groups) equals anchor_stats and anchor_groups."""
    steps, _ = synthetic_round(0, groups=30, seed=1)
    steps = steps.sample(fraction=1.0, shuffle=True, seed=3).with_columns(  # rows out of order, some states unknown
        pl.when((pl.col("group_id") % 3 == 0) & (pl.col("step") == 3)).then(None).otherwise(pl.col("state_key"))
        .alias("state_key"))
    adv = compute_advantages(steps, AdvantageConfig())
    stats, groups = anchor_tables(adv)
    assert stats.equals(anchor_stats(adv), null_equal=True) and groups.equals(anchor_groups(adv), null_equal=True)
    assert stats.height == 30 and groups.height == adv.select("group_id", "anchor_id").n_unique()
    assert stats["pure_share"].null_count() == 10 and stats["revisit_steps"].null_count() == 10  # groups 0, 3, ...
