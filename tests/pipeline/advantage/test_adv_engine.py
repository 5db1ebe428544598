"""Hand-computed GiGPO advantages (verl-agent conventions, DESIGN.md section 4)."""
from __future__ import annotations

import math

import polars as pl
import pytest

from pipeline.advantage import ADVANTAGE_COLUMNS, AdvantageConfig, compute_advantages

EPS = 1e-6


def col(out: pl.DataFrame, name: str) -> list[float]:
    return out.sort("episode_id", "step")[name].to_list()


def test_two_episode_group_gets_plus_minus_0_7071(frame):
    out = compute_advantages(frame([(0, 0, 0, 1.0, 1), (0, 1, 0, 0.0, 2)]), AdvantageConfig())
    expected = 0.5 / (math.sqrt(0.5) + EPS)
    assert col(out, "adv_episode") == pytest.approx([expected, -expected], abs=1e-12)
    assert [round(a, 4) for a in col(out, "adv_episode")] == [0.7071, -0.7071]
    assert col(out, "adv_step") == [0.0, 0.0]  # two singleton anchor groups
    assert col(out, "anchor_group_size") == [1, 1]
    assert col(out, "advantage") == col(out, "adv_episode")


@pytest.mark.parametrize(
    ("episode_stats", "norm", "expected"),
    [
        ("episodes", "std", 1.0 / (1.0 + EPS)),  # one entry: mean 0, std 1
        ("episodes", "mean", 1.0),
        ("steps", "std", 0.0),  # three equal entries: exactly 0
        ("steps", "mean", 0.0),
    ],
)
def test_lone_episode(episode_stats, norm, expected, frame):
    steps = frame([(5, 9, 0, 0.0, 1), (5, 9, 1, 0.0, 2), (5, 9, 2, 1.0, 3)])
    out = compute_advantages(steps, AdvantageConfig(gamma=0.5, episode_stats=episode_stats, norm=norm))
    assert col(out, "step_return") == [0.25, 0.5, 1.0]
    assert col(out, "adv_episode") == [expected] * 3
    assert col(out, "adv_step") == [0.0] * 3


def test_single_row_group_has_mean_0_std_1_in_steps_mode(frame):
    out = compute_advantages(frame([(1, 1, 0, 2.0, 1)]), AdvantageConfig())
    assert col(out, "adv_episode") == [2.0 / (1.0 + EPS)]


def test_identical_returns_give_exact_zeros(frame):
    rows = [(0, e, s, r, 10 + s) for e in (0, 1) for s, r in ((0, 0.0), (1, 1.0))]
    out = compute_advantages(frame(rows), AdvantageConfig(gamma=0.95))
    assert col(out, "step_return") == pytest.approx([0.95, 1.0, 0.95, 1.0])
    for name in ("adv_episode", "adv_step", "advantage"):
        assert col(out, name) == [0.0] * 4
    assert col(out, "anchor_group_size") == [2] * 4


INVALID = [  # episode 0's last action is invalid
    (0, 0, 0, 0.0, 1),
    (0, 0, 1, 1.0, 2, False),
    (0, 1, 0, 0.0, 1),
    (0, 1, 1, 0.0, 3),
]


def test_invalid_step_penalty_hits_only_that_step(frame):
    out = compute_advantages(frame(INVALID), AdvantageConfig(gamma=0.5, norm="mean", invalid_penalty=0.1))
    assert col(out, "step_return") == pytest.approx([0.5, 0.9, 0.0, 0.0], abs=1e-12)  # step 0 keeps 0.5
    # episode scores per row: 1, 1 - 0.1, 0, 0 -> mean 0.475
    assert col(out, "adv_episode") == pytest.approx([0.525, 0.425, -0.475, -0.475], abs=1e-12)
    assert col(out, "adv_step") == pytest.approx([0.25, 0.0, -0.25, 0.0], abs=1e-12)
    assert col(out, "advantage") == pytest.approx([0.775, 0.425, -0.725, -0.475], abs=1e-12)


def test_invalid_step_in_episodes_mode_uses_first_step_entry(frame):
    cfg = AdvantageConfig(gamma=0.5, norm="mean", episode_stats="episodes")
    out = compute_advantages(frame(INVALID), cfg)
    # entries: one per episode, its step-0 row score (1, 0) -> mean 0.5; rows keep their own penalty
    assert col(out, "adv_episode") == pytest.approx([0.5, 0.4, -0.5, -0.5], abs=1e-12)


def test_missing_action_valid_means_all_valid(frame):
    out = compute_advantages(frame(INVALID).drop("action_valid"), AdvantageConfig(gamma=0.5, norm="mean"))
    assert col(out, "step_return") == [0.5, 1.0, 0.0, 0.0]


def test_shared_first_anchor(shared_start):
    out = compute_advantages(shared_start, AdvantageConfig(gamma=0.5, episode_stats="episodes"))
    assert col(out, "step_return") == [0.5, 1.0, 0.25, 0.5, 1.0, 0.0, 0.0]
    assert col(out, "anchor_group_size") == [3, 2, 3, 2, 2, 3, 2]
    a3 = 0.25 / (math.sqrt(0.125) + EPS)
    expected = [0.25 / (0.25 + EPS), 0.0, 0.0, a3, 0.0, -0.25 / (0.25 + EPS), -a3]
    assert col(out, "adv_step") == pytest.approx(expected, abs=1e-12)
    win, lose = (1 / 3) / (math.sqrt(1 / 3) + EPS), -(2 / 3) / (math.sqrt(1 / 3) + EPS)
    assert col(out, "adv_episode") == pytest.approx([win] * 5 + [lose] * 2, abs=1e-12)


def test_episode_stats_steps_weighs_long_episodes_more(shared_start):
    out = compute_advantages(shared_start, AdvantageConfig(gamma=0.5, episode_stats="steps"))
    std = math.sqrt(5 / 21)  # 7 entries: five 1s, two 0s
    expected = [(2 / 7) / (std + EPS)] * 5 + [-(5 / 7) / (std + EPS)] * 2
    assert col(out, "adv_episode") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("episode_stats", "expected"),
    [
        ("steps", [0.25 / (0.5 + EPS)] * 3 + [-0.75 / (0.5 + EPS)]),  # entries 1, 1, 1, 0: mean 0.75, std 0.5
        ("episodes", [0.5 / (math.sqrt(0.5) + EPS)] * 3 + [-0.5 / (math.sqrt(0.5) + EPS)]),  # entries 1, 0
    ],
)
def test_episode_stats_modes_with_unequal_lengths(episode_stats, expected, frame):
    steps = frame([(0, 0, 0, 0.0, 1), (0, 0, 1, 0.0, 2), (0, 0, 2, 1.0, 3), (0, 1, 0, 0.0, 4)])
    out = compute_advantages(steps, AdvantageConfig(episode_stats=episode_stats))
    assert col(out, "adv_episode") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("estimator", "weight_e", "weight_s"), [("gigpo", 1.0, 0.5), ("grpo", 1.0, 0.0), ("step_only", 0.0, 1.0)]
)
def test_each_estimator(estimator, weight_e, weight_s, shared_start):
    cfg = AdvantageConfig(gamma=0.5, episode_stats="episodes", estimator=estimator, step_weight=0.5)
    out = compute_advantages(shared_start, cfg)
    win = (1 / 3) / (math.sqrt(1 / 3) + EPS)
    assert col(out, "advantage")[0] == pytest.approx(weight_e * win + weight_s * 0.25 / (0.25 + EPS), abs=1e-12)
    assert col(out, "advantage")[1] == pytest.approx(weight_e * win, abs=1e-12)  # anchor 2: A_S = 0


def test_mean_norm(shared_start):
    out = compute_advantages(shared_start, AdvantageConfig(gamma=0.5, norm="mean", episode_stats="episodes"))
    assert col(out, "adv_episode") == pytest.approx([1 / 3] * 5 + [-2 / 3] * 2, abs=1e-12)
    assert col(out, "adv_step") == pytest.approx([0.25, 0.0, 0.0, 0.25, 0.0, -0.25, -0.25], abs=1e-12)


def test_anchors_never_merge_across_groups(frame):
    out = compute_advantages(frame([(0, 0, 0, 1.0, 7), (1, 1, 0, 0.0, 7)]), AdvantageConfig())
    assert col(out, "anchor_group_size") == [1, 1]
    assert col(out, "adv_step") == [0.0, 0.0]
    assert col(out, "adv_episode") == [1.0 / (1.0 + EPS), 0.0]  # two lone one-row groups


def test_keeps_input_row_order_and_other_columns(shared_start):
    steps = shared_start.reverse().with_columns(pl.Series("prompt_ids", [[i, i] for i in range(7)]))
    out = compute_advantages(steps, AdvantageConfig(gamma=0.5))
    assert out.columns == steps.columns + list(ADVANTAGE_COLUMNS)
    assert out.select(steps.columns).equals(steps)
    assert out["step_return"].to_list() == [0.0, 0.0, 1.0, 0.5, 0.25, 1.0, 0.5]
    # anchors 1, 2, 3 first appear in that (episode, step) order
    assert out["anchor_id"].to_list() == [2, 0, 1, 2, 0, 1, 0]
    assert out.schema["anchor_group_size"] == pl.Int32 and out.schema["advantage"] == pl.Float64


def test_recomputing_replaces_existing_advantage_columns(shared_start):
    cfg = AdvantageConfig(gamma=0.5)
    once = compute_advantages(shared_start, cfg)
    twice = compute_advantages(once.with_columns(pl.lit(9.0).alias("advantage")), cfg)
    assert twice.equals(once)


def test_lazy_in_lazy_out(shared_start):
    steps = shared_start.sample(fraction=1.0, shuffle=True, seed=3)
    lazy = compute_advantages(steps.lazy(), AdvantageConfig(gamma=0.5))
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect().equals(compute_advantages(steps, AdvantageConfig(gamma=0.5)))


def test_empty_in_empty_out(frame):
    out = compute_advantages(frame([]), AdvantageConfig())
    assert out.height == 0
    assert [out.schema[c] for c in ADVANTAGE_COLUMNS] == [pl.Float64] * 3 + [pl.Int32, pl.Float64, pl.Int32]


def test_gamma_one_and_zero(frame):
    steps = frame([(0, 0, 0, 1.0, 1), (0, 0, 1, 2.0, 2), (0, 0, 2, 4.0, 3)])
    assert col(compute_advantages(steps, AdvantageConfig(gamma=1.0)), "step_return") == [7.0, 6.0, 4.0]
    assert col(compute_advantages(steps, AdvantageConfig(gamma=0.0)), "step_return") == [1.0, 2.0, 4.0]


def test_long_episode_return_matches_recurrence(frame):
    rewards = [float(i % 7 == 0) for i in range(300)]  # 300 steps: nine doubling passes
    out = compute_advantages(frame([(0, 0, i, r, i) for i, r in enumerate(rewards)]), AdvantageConfig(gamma=0.9))
    expected, running = [0.0] * 300, 0.0
    for i in reversed(range(300)):
        running = rewards[i] + 0.9 * running
        expected[i] = running
    assert col(out, "step_return") == pytest.approx(expected, rel=1e-13)
