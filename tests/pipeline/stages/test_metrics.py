"""A round's metrics tell format errors from commands the env refused ("Nothing happens.")."""
from __future__ import annotations

import polars as pl

import storage
from pipeline.records import RoundMetrics
from pipeline.stages.metrics import gather
from storage.synthetic import synthetic_round


def test_format_errors_and_refused_commands_are_counted_apart(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps, episodes = synthetic_round(0, groups=1, group_size=2, seed=1)  # episodes 0 and 1, 54 steps
    refused = {(0, 2), (0, 3), (1, 0), (1, 27)}  # the observations after steps (0, 1), (0, 2), nothing, (1, 26)
    steps = steps.with_columns(
        observation=pl.when(pl.struct("episode_id", "step").map_elements(
            lambda k: (k["episode_id"], k["step"]) in refused, return_dtype=pl.Boolean))
        .then(pl.lit("Nothing happens.")).otherwise(pl.col("observation")),
        action_valid=pl.col("step") != 5)  # one format error per episode
    infos = [storage.write_shard(run, 0, "steps", steps.sample(fraction=1.0, shuffle=True, seed=3), "s"),
             storage.write_shard(run, 0, "episodes", episodes, "e")]
    run.commit(0, "trajectories", infos, "cfg", 0)
    metrics = gather(run, 0, {}, [], 1)
    assert (metrics.format_error_share, metrics.nothing_happens_share) == (2 / 54, 3 / 54)


def test_older_records_read_their_invalid_action_share_as_format_errors():
    old = '{"round": 2, "policy_version": 2, "invalid_action_share": 0.125}'
    assert RoundMetrics.from_json(old).format_error_share == 0.125
