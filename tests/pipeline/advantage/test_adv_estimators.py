"""The baselines besides GRPO: RLOO (leave-one-out over a group's episodes) and PPO's per-step rewards."""
from __future__ import annotations

import polars as pl
import pytest

from pipeline.advantage import AdvantageConfig, compute_advantages

# (group_id, episode_id, step, reward, anchor_key, action_valid)
ROWS = [
    (0, 0, 0, 0.0, 1, True), (0, 0, 1, 10.0, 2, True),  # score 10
    (0, 1, 0, 0.0, 1, True), (0, 1, 1, 0.0, 3, False), (0, 1, 2, 0.0, 4, True),  # score 0, step 1 invalid
    (0, 2, 0, 10.0, 1, True),  # score 10
    (0, 3, 0, 0.0, 1, True), (0, 3, 1, 0.0, 5, True),  # score 0
    (1, 4, 0, 1.0, 1, True), (1, 5, 0, 2.0, 1, True), (1, 6, 0, 6.0, 1, True),  # scores 1, 2, 6
    (2, 7, 0, 0.0, 1, False), (2, 7, 1, 10.0, 2, True),  # alone in its group: score 10, step 0 invalid
]


def col(out: pl.DataFrame, name: str) -> list[float]:
    return out.sort("episode_id", "step")[name].to_list()


@pytest.mark.parametrize("episode_stats", ["steps", "episodes"])
def test_rloo_is_each_score_against_the_mean_of_the_other_episodes(frame, episode_stats):
    out = compute_advantages(frame(ROWS), AdvantageConfig(estimator="rloo", episode_stats=episode_stats))
    third = 20 / 3  # group 0: 10 - (0 + 10 + 0) / 3 and 0 - (10 + 10 + 0) / 3
    assert col(out, "advantage") == pytest.approx([
        third, third,
        -third, -0.1 - third, -third,  # the invalid step's own score carries its penalty (as A_E's)
        third,
        -third, -third,
        1 - 4.0, 2 - 3.5, 6 - 1.5,  # group 1: the others' means are 4, 3.5, 1.5; no division by a std
        10 - 0.1, 10.0,  # a lone episode has baseline 0 (verl)
    ], abs=1e-12)


def test_rloo_ignores_norm_and_equal_scores_give_exactly_zero(frame):
    rows = [(0, 0, 0, 1.0, 1), (0, 1, 0, 1.0, 1), (0, 2, 0, 1.0, 1)]
    for norm in ("std", "mean"):
        assert col(compute_advantages(frame(rows), AdvantageConfig(estimator="rloo", norm=norm)), "advantage") \
            == [0.0, 0.0, 0.0]


def test_ppo_gives_the_trainer_each_steps_reward_minus_its_penalty(frame):
    out = compute_advantages(frame(ROWS), AdvantageConfig(estimator="ppo", invalid_penalty=0.5))
    assert col(out, "advantage") == [0.0, 10.0, 0.0, -0.5, 0.0, 10.0, 0.0, 0.0, 1.0, 2.0, 6.0, -0.5, 10.0]
    assert col(out, "adv_episode") == col(compute_advantages(frame(ROWS), AdvantageConfig(invalid_penalty=0.5)),
                                          "adv_episode")  # A_E and A_S stay for the anchor statistics
