"""Properties: row order never matters; the engine agrees with the per-row Python reference."""
from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.advantage import ADVANTAGE_COLUMNS, AdvantageConfig, compute_advantages, engine
from pipeline.advantage.naive import naive_advantages

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def step_frames(draw, texts: bool = False) -> pl.DataFrame:
    """A round: 1-4 groups of 1-4 episodes of 1-6 steps, few anchor states so they collide."""
    group_ids = draw(st.lists(st.integers(-50, 50), min_size=1, max_size=4, unique=True))
    names = ("group_id", "episode_id", "step", "reward", "anchor_key", "action_valid", "observation", "state_key",
             "admissible_key")
    columns = {k: [] for k in names}
    episode = draw(st.integers(-1000, 1000))
    words = ["open fridge 1", "open fridge 2", "go to desk 1", "go to desk 11", "look around", "look around."]
    for g in group_ids:
        for _ in range(draw(st.integers(1, 4))):
            episode += 1
            for s in range(draw(st.integers(1, 6))):
                columns["group_id"].append(g)
                columns["episode_id"].append(episode)
                columns["step"].append(s)
                columns["reward"].append(draw(st.sampled_from([0.0, 0.0, 1.0, 0.5, -1.0, 10.0])))
                columns["anchor_key"].append(draw(st.integers(0, 3)))
                columns["action_valid"].append(draw(st.booleans()))
                columns["observation"].append(draw(st.sampled_from(words)) if texts else "")
                columns["state_key"].append(draw(st.integers(0, 2)))
                columns["admissible_key"].append(draw(st.integers(0, 1)))
    dtypes = {
        "group_id": pl.Int64, "episode_id": pl.Int64, "step": pl.Int32, "reward": pl.Float32, "anchor_key": pl.UInt64,
        "state_key": pl.UInt64, "admissible_key": pl.UInt64,
    }
    return pl.DataFrame(columns).with_columns(pl.col(c).cast(t) for c, t in dtypes.items())


configs = st.builds(
    AdvantageConfig,
    estimator=st.sampled_from(["gigpo", "grpo", "step_only"]),
    gamma=st.sampled_from([0.0, 0.5, 0.95, 1.0]),
    step_weight=st.sampled_from([1.0, 0.3]),
    norm=st.sampled_from(["std", "mean"]),
    episode_stats=st.sampled_from(["steps", "episodes"]),
    invalid_penalty=st.sampled_from([0.0, 0.1]),
    anchor=st.sampled_from(["exact", "exact", "state", "composite"]),
)


@SETTINGS
@given(steps=step_frames(), cfg=configs, seed=st.integers(0, 2**16))
def test_permuting_rows_changes_nothing(steps, cfg, seed):
    out = compute_advantages(steps, cfg)
    shuffled = compute_advantages(steps.sample(fraction=1.0, shuffle=True, seed=seed), cfg)
    keys = ["episode_id", "step"]
    assert shuffled.sort(keys).equals(out.sort(keys))  # bit for bit


@SETTINGS
@given(steps=step_frames(), cfg=configs)
def test_matches_per_row_reference(steps, cfg):
    out = compute_advantages(steps, cfg)
    expected = naive_advantages(steps, cfg)
    assert out["anchor_group_size"].to_list() == expected["anchor_group_size"]
    for name in ADVANTAGE_COLUMNS:
        assert out[name].to_list() == pytest.approx(expected[name], rel=1e-9, abs=1e-8), name


@settings(max_examples=40, deadline=None)
@given(steps=step_frames(texts=True), order=st.sampled_from(["episode", "step"]), threshold=st.sampled_from([0.8, 0.9]))
def test_similarity_matches_per_row_verl_agent_clustering(steps, order, threshold):
    cfg = AdvantageConfig(anchor="similarity", anchor_threshold=threshold, cluster_order=order)
    out = compute_advantages(steps, cfg)
    expected = naive_advantages(steps, cfg)
    assert out["anchor_group_size"].to_list() == expected["anchor_group_size"]
    assert out["anchor_id"].to_list() == expected["anchor_id"]
    assert out["adv_step"].to_list() == pytest.approx(expected["adv_step"], rel=1e-9, abs=1e-8)


@SETTINGS
@given(steps=step_frames(), cfg=configs, chunk=st.integers(1, 12))
def test_kernel_chunks_cut_between_groups_only(steps, cfg, chunk):
    whole = compute_advantages(steps, cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "CHUNK_ROWS", chunk)
        assert compute_advantages(steps, cfg).equals(whole)
