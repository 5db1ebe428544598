"""Bad input raises clear errors naming the column/field and the offending ids."""
from __future__ import annotations

import math

import polars as pl
import pytest

from pipeline.advantage import AdvantageConfig, AdvantageInputError, compute_advantages

GOOD = [(0, 0, 0, 0.0, 1), (0, 0, 1, 1.0, 2), (0, 1, 0, 0.0, 1), (3, 7, 0, 0.0, 4), (3, 7, 1, 0.0, 5)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_reward_names_column_and_step(frame, bad):
    rows = GOOD[:3] + [(3, 7, 0, 0.0, 4), (3, 7, 1, bad, 5)]
    message = r"column 'reward' has NaN or infinite values at \(episode_id, step\) \[\(7, 1\)\]"
    with pytest.raises(AdvantageInputError, match=message):
        compute_advantages(frame(rows), AdvantageConfig())


def test_null_reward(frame):
    steps = frame(GOOD).with_columns(pl.when(pl.col("episode_id") != 7).then(pl.col("reward")).alias("reward"))
    with pytest.raises(AdvantageInputError, match=r"column 'reward' has null values in episode_id\(s\) \[7\]"):
        compute_advantages(steps, AdvantageConfig())


@pytest.mark.parametrize("missing", ["group_id", "episode_id", "step", "reward", "anchor_key"])
def test_missing_column(frame, missing):
    with pytest.raises(AdvantageInputError, match=rf"steps lack column\(s\) \['{missing}'\]"):
        compute_advantages(frame(GOOD).drop(missing), AdvantageConfig())


def test_missing_observation_for_text_anchor(frame):
    with pytest.raises(AdvantageInputError, match=r"lack column\(s\) \['observation'\] \(anchor='normalized'"):
        compute_advantages(frame(GOOD), AdvantageConfig(anchor="normalized"))


def test_missing_lazy_column(frame):
    with pytest.raises(AdvantageInputError, match=r"\['reward'\]"):
        compute_advantages(frame(GOOD).drop("reward").lazy(), AdvantageConfig())


def test_duplicate_episode_step(frame):
    with pytest.raises(AdvantageInputError, match=r"duplicate \(episode_id, step\) keys \[\(7, 1\)\]"):
        compute_advantages(frame(GOOD + [(3, 7, 1, 1.0, 9)]), AdvantageConfig())


def test_episode_in_two_groups(frame):
    with pytest.raises(AdvantageInputError, match=r"column 'group_id': episode_id\(s\) \[7\] .* \{7: \[3, 4\]\}"):
        compute_advantages(frame(GOOD + [(4, 7, 2, 0.0, 9)]), AdvantageConfig())


def test_step_gap(frame):
    with pytest.raises(AdvantageInputError, match=r"column 'step' must run 0, 1, \.\.\., n-1 .* \[\(7, 3\)\]"):
        compute_advantages(frame(GOOD + [(3, 7, 3, 0.0, 9)]), AdvantageConfig())


def test_several_rounds(frame):
    steps = frame(GOOD, round=pl.Series([0, 0, 0, 1, 1], dtype=pl.Int32))
    with pytest.raises(AdvantageInputError, match=r"column 'round' holds several rounds \[0, 1\]"):
        compute_advantages(steps, AdvantageConfig())


def test_wrong_dtypes(frame):
    with pytest.raises(AdvantageInputError, match="column 'action_valid' must be Boolean"):
        compute_advantages(frame(GOOD).with_columns(pl.col("action_valid").cast(pl.Int8)), AdvantageConfig())
    with pytest.raises(AdvantageInputError, match="column 'step' must be an integer type"):
        compute_advantages(frame(GOOD).with_columns(pl.col("step").cast(pl.Float64)), AdvantageConfig())


def test_not_a_frame():
    with pytest.raises(TypeError, match="got dict"):
        compute_advantages({"reward": [1.0]}, AdvantageConfig())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gamma", -0.1, r"AdvantageConfig.gamma must be in \[0.0, 1.0\], got -0.1"),
        ("gamma", 1.5, r"AdvantageConfig.gamma must be in"),
        ("epsilon", 0.0, r"AdvantageConfig.epsilon must be finite and > 0"),
        ("estimator", "a2c", r"AdvantageConfig.estimator must be one of \['gigpo', 'grpo', 'ppo', 'rloo', 'step_only"),
        ("norm", "max", r"AdvantageConfig.norm must be one of"),
        ("episode_stats", "tokens", r"AdvantageConfig.episode_stats must be one of"),
        ("anchor", "fuzzy", r"AdvantageConfig.anchor must be one of"),
        ("anchor_threshold", 1.5, r"AdvantageConfig.anchor_threshold must be in \(0, 1\]"),
        ("invalid_penalty", -1.0, r"AdvantageConfig.invalid_penalty must be in"),
        ("normalizers", ("strip", "nope"), r"AdvantageConfig.normalizers must be one of"),
        ("step_weight", math.nan, r"AdvantageConfig.step_weight must be finite"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        AdvantageConfig(**{field: value})


def test_columns_anchor_needs_columns():
    with pytest.raises(ValueError, match="AdvantageConfig.anchor_columns must name at least one column"):
        AdvantageConfig(anchor="columns")
