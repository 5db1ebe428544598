"""Anchor groups one by one and their purity against the true state; the ``state`` and ``composite`` anchors.

The hand-built round: one group of three episodes (gamma 0.5) in true states A, B, C.

    ep 0: "start" [A] -> "Nothing happens." [A] -> "You arrive at desk 1." [C], reward 1
    ep 1: "start" [A] -> "You arrive at shelf 1." [B] -> "Nothing happens." [B]
    ep 2: "start" [A]

"Nothing happens." pools states A and B; the second visit of B (text "Nothing
happens.") is a different text from its first ("You arrive at shelf 1.").
"""
from __future__ import annotations

import math

import polars as pl
import pytest

from pipeline.advantage import (
    AdvantageConfig,
    AdvantageInputError,
    anchor_groups,
    anchor_key,
    anchor_stats,
    compute_advantages,
)
from pipeline.advantage.naive import naive_advantages
from storage.schemas import ANCHOR_GROUPS, ANCHOR_STATS

START, NOTHING, DESK, SHELF = "start", "Nothing happens.", "You arrive at desk 1.", "You arrive at shelf 1."
A, B, C = 11, 22, 33
ADM_A, ADM_B, ADM_C = 100, 200, 300  # admissible-commands keys of each state
ROWS = [  # episode, step, observation, state, admissible, reward
    (0, 0, START, A, ADM_A, 0.0), (0, 1, NOTHING, A, ADM_A, 0.0), (0, 2, DESK, C, ADM_C, 1.0),
    (1, 0, START, A, ADM_A, 0.0), (1, 1, SHELF, B, ADM_B, 0.0), (1, 2, NOTHING, B, ADM_B, 0.0),
    (2, 0, START, A, ADM_A, 0.0),
]
EPS = 1e-6


@pytest.fixture
def steps() -> pl.DataFrame:
    ep, step, obs, state, adm, reward = (list(c) for c in zip(*ROWS))
    return pl.DataFrame({
        "round": pl.Series([4] * 7, dtype=pl.Int32), "group_id": pl.Series([9] * 7, dtype=pl.Int64),
        "task_id": ["t"] * 7, "episode_id": pl.Series(ep, dtype=pl.Int64), "step": pl.Series(step, dtype=pl.Int32),
        "observation": obs, "anchor_key": anchor_key(obs), "state_key": pl.Series(state, dtype=pl.UInt64),
        "admissible_key": pl.Series(adm, dtype=pl.UInt64), "reward": pl.Series(reward, dtype=pl.Float32),
        "action_valid": [True] * 7,
    })


def adv(steps, anchor: str, norm: str = "mean") -> pl.DataFrame:
    return compute_advantages(steps, AdvantageConfig(gamma=0.5, norm=norm, anchor=anchor)).sort("episode_id", "step")


def test_anchor_groups_of_exact_text(steps):
    groups = anchor_groups(adv(steps, "exact", norm="std"))
    assert groups.columns == ANCHOR_GROUPS.names
    assert groups.to_arrow().cast(ANCHOR_GROUPS).schema.equals(ANCHOR_GROUPS)
    # returns: ep 0 = 0.25, 0.5, 1; ep 1 and ep 2 all 0
    std_start, std_nothing = math.sqrt(1 / 48), math.sqrt(0.125)  # of [0.25, 0, 0] and [0.5, 0]
    assert groups.select("round", "group_id", "anchor_id", "size", "anchor_text", "distinct_returns",
                         "states", "pure").rows() == [
        (4, 9, 0, 3, START, 2, 1, True),
        (4, 9, 1, 2, NOTHING, 2, 2, False),  # "Nothing happens." pools A and B
        (4, 9, 2, 1, DESK, 1, 1, True),
        (4, 9, 3, 1, SHELF, 1, 1, True),
    ]
    assert groups["return_mean"].to_list() == pytest.approx([1 / 12, 0.25, 1.0, 0.0], abs=1e-15)
    assert groups["return_std"].to_list() == pytest.approx([std_start, std_nothing, 0.0, 0.0], abs=1e-15)
    assert groups["mean_abs_adv_step"].to_list() == pytest.approx(
        [(1 / 9) / (std_start + EPS), 0.25 / (std_nothing + EPS), 0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize(("anchor", "expected"), [
    # pure share, impure step share, states per anchor group, revisit steps, missed revisit share
    ("exact", (0.5, 2 / 7, 5 / 4, 6, 1 / 6)),  # misses B's second visit (shelf text is a singleton)
    ("state", (1.0, 0.0, 1.0, 6, 0.0)),  # the oracle: pure, misses nothing
    ("composite", (1.0, 0.0, 1.0, 6, 3 / 6)),  # splits "Nothing happens." by state, but leaves both visits of B and A's
])
def test_purity_per_group(steps, anchor, expected):
    stats = anchor_stats(adv(steps, anchor))
    assert stats.columns == ANCHOR_STATS.names
    names = ["pure_share", "impure_step_share", "states_per_anchor_group", "revisit_steps", "missed_revisit_share"]
    assert stats.select(names).row(0) == pytest.approx(expected, abs=1e-15)


def test_purity_is_null_without_true_states(steps):
    out = adv(steps.with_columns(pl.lit(None, pl.UInt64).alias("state_key")), "exact")
    stats = anchor_stats(out)
    assert stats.select("pure_share", "revisit_steps", "missed_revisit_share").row(0) == (None, None, None)
    groups = anchor_groups(out.drop("state_key"))
    assert groups["states"].null_count() == groups["pure"].null_count() == 4
    assert groups["size"].to_list() == [3, 2, 1, 1]


def test_state_anchor_advantages_by_hand(steps):
    out = adv(steps, "state")
    # A: ep0 s0, ep0 s1, ep1 s0, ep2 s0 with returns 0.25, 0.5, 0, 0 (mean 0.1875); B: two zero returns; C alone
    assert out["anchor_group_size"].to_list() == [4, 4, 1, 4, 2, 2, 4]
    assert out["anchor_id"].to_list() == [0, 0, 1, 0, 2, 2, 0]
    assert out["adv_step"].to_list() == pytest.approx([0.0625, 0.3125, 0.0, -0.1875, 0.0, 0.0, -0.1875], abs=1e-15)
    assert out["adv_step"].to_list() == pytest.approx(naive_advantages(steps, AdvantageConfig(
        gamma=0.5, norm="mean", anchor="state"))["adv_step"], abs=1e-15)


def test_composite_anchor_advantages_by_hand(steps):
    out = adv(steps, "composite")
    # only "start" in A is shared (returns 0.25, 0, 0: mean 1/12); "Nothing happens." in A and in B are apart
    assert out["anchor_group_size"].to_list() == [3, 1, 1, 3, 1, 1, 3]
    assert out["anchor_id"].to_list() == [0, 1, 2, 0, 3, 4, 0]
    assert out["adv_step"].to_list() == pytest.approx([1 / 6, 0.0, 0.0, -1 / 12, 0.0, 0.0, -1 / 12], abs=1e-15)
    exact = adv(steps, "exact")
    assert exact["anchor_group_size"].to_list() == [3, 2, 1, 3, 1, 2, 3]  # text alone pools A and B


def test_state_anchor_refuses_missing_states(steps):
    nulls = steps.with_columns(pl.when(pl.col("episode_id") == 1).then(None).otherwise("state_key").alias("state_key"))
    with pytest.raises(AdvantageInputError, match=r"column 'state_key' has null values in episode_id\(s\) \[1\] "
                                                  r".*only envs that report their true state .*anchor='state' cannot"):
        adv(nulls, "state")
    missing = r"lack column\(s\) \['state_key'\] \(anchor='state'.*schema version 1"
    with pytest.raises(AdvantageInputError, match=missing):
        adv(steps.drop("state_key"), "state")
    with pytest.raises(AdvantageInputError, match=r"lack column\(s\) \['admissible_key'\] \(anchor='composite'"):
        adv(steps.drop("admissible_key"), "composite")


def test_anchor_groups_refuses_advantages_without_anchor_ids(steps):
    out = adv(steps, "exact").with_columns(pl.lit(None, pl.Int32).alias("anchor_id"))
    with pytest.raises(AdvantageInputError, match="column 'anchor_id' has nulls: advantages written with schema v"):
        anchor_groups(out)
    renumbered = adv(steps, "exact").with_columns(pl.col("anchor_id").replace({0: 1, 1: 0}))
    with pytest.raises(AdvantageInputError, match=r"'anchor_id' must number each group's anchor groups 0, 1, \.\.\."):
        anchor_stats(renumbered)


def test_round_purity_pools_groups_exactly(steps, steps_table, tmp_path):
    """Through the run directory: anchor_groups read back with Polars, the round's metrics pooled over groups."""
    import storage
    from pipeline.stages.advantage import advantage
    from pipeline.stages.metrics import _purity  # pooled_purity over the round's committed tables

    # group 10: two one-step episodes from the same start A (one pure anchor group of 2 steps, both revisits)
    more = pl.DataFrame({"group_id": [10, 10], "episode_id": [3, 4], "step": [0, 0], "reward": [1.0, 0.0],
                         "anchor_key": steps["anchor_key"][:1].to_list() * 2, "action_valid": [True, True],
                         "state_key": [A, A], "admissible_key": [ADM_A, ADM_A]})
    scalars = steps.drop("round", "task_id", "observation")
    scalars = pl.concat([scalars, more.select(scalars.columns).cast(scalars.schema)])
    run = storage.open_run(str(tmp_path))
    run.commit(0, "trajectories", [storage.write_shard(run, 0, "steps", steps_table(scalars), "w0")], "cfg", 0)
    advantage(None, run, 0, AdvantageConfig(gamma=0.5), progress=False)
    groups = run.scan("anchor_groups").filter(pl.col("size") > 1).select("group_id", "size", "states", "pure")
    assert groups.collect().rows() == [(9, 3, 1, True), (9, 2, 2, False), (10, 2, 1, True)]
    assert _purity(run, 0) == pytest.approx({
        "anchor_pure_share": 2 / 3,  # start (9), start (10) pure; "Nothing happens." (9) not
        "states_per_anchor_group": 6 / 5,  # states 1, 2, 1, 1 in group 9; 1 in group 10
        "impure_step_share": 2 / 9,
        "missed_revisit_share": 1 / 8,  # revisits: 6 in group 9 (1 missed), 2 in group 10
    }, abs=1e-15)


def test_round_of_schema_v1_steps(steps, steps_table, tmp_path, monkeypatch):
    """Steps written by the version-1 code (no state columns) get advantages; states read as null."""
    import storage
    from pipeline.stages.advantage import advantage
    from storage import shards

    run = storage.open_run(str(tmp_path))
    old = steps_table(steps.drop("round", "task_id", "observation")).drop_columns(["state_key", "admissible_key"])
    with monkeypatch.context() as m:
        m.setattr(shards, "SCHEMA_VERSION", 1)
        info = shards.write_file(run.fs, run.stage_dir(0, "trajectories"), "steps/w0.parquet", old, "steps")
    run.commit(0, "trajectories", [info], "cfg", 0)
    assert run.read("steps")["state_key"].null_count() == 7
    advantage(None, run, 0, AdvantageConfig(gamma=0.5), progress=False)
    adv_v1 = run.read("advantages").sort("episode_id", "step")
    assert adv_v1["state_key"].null_count() == 7
    assert adv_v1["anchor_group_size"].to_list() == [3, 2, 1, 3, 1, 2, 3]
    assert run.read("anchor_groups")["pure"].null_count() == 4
    assert run.read("anchor_stats")["pure_share"].to_list() == [None]
    with pytest.raises(AdvantageInputError, match=r"'state_key' has null values .*schema version 1 lack it"):
        compute_advantages(run.read("steps"), AdvantageConfig(anchor="state"))
