"""Evaluation-only: a committed round's checkpoint (or a model directory) on held-out games, no training."""
from __future__ import annotations

import json
import os

import polars as pl
import pytest

import storage
from pipeline.evaluate_checkpoint import main
from pipeline.models.tiny_model import make_tiny_model

SMALL = ["games.generate_train=1", "games.generate_eval=2", "games.max_receptacles=5", "evaluation.group_size=2",
         "rollout.env.max_steps=2", "rollout.sampling.max_new_tokens=4", "cluster.n_workers=1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run whose round 0 has a committed checkpoint (the tiny model)."""
    root = tmp_path_factory.mktemp("eval") / "run"
    run = storage.open_run(str(root))
    run.begin(0, "checkpoint")
    make_tiny_model(run.stage_dir(0, "checkpoint"), seed=0)
    files = sorted(os.listdir(run.stage_dir(0, "checkpoint")))
    run.commit(0, "checkpoint", [run.describe(0, "checkpoint", f) for f in files], "cfg", 1)
    return root


def _args(run_dir, *extra) -> list[str]:
    return ["--config", "configs/smoke.yaml", f"run_dir={run_dir}", *SMALL, *extra]


def test_round_checkpoint_is_evaluated_by_task_type_into_a_table(run_dir, capsys):
    assert main(_args(run_dir, "--checkpoint", "0", "--episodes", "4")) == 0
    out = capsys.readouterr().out
    table = pl.read_parquet(run_dir / "evaluations/round-0-valid_seen.parquet")
    ckpt = str(run_dir / "rounds/000000/checkpoint")
    types = {}
    for folder, _, files in os.walk(run_dir / "games/json_2.1.1/valid_seen"):
        if "traj_data.json" in files:
            task = f"{os.path.basename(os.path.dirname(folder))}/{os.path.basename(folder)}"
            types[task] = json.loads(open(os.path.join(folder, "traj_data.json")).read())["task_type"]
    assert table.height == 4 and set(table["checkpoint"]) == {ckpt}
    assert dict(zip(table["task_id"], table["task_type"])) == types
    assert table["round"].to_list() == [0] * 4 and table["policy_version"].to_list() == [1] * 4
    assert out.startswith("setup: starting a LocalCluster of 1 worker(s) x 1 thread(s) ...\n"
                          f"{ckpt}: 4 held-out episodes (valid_seen)\n")
    lines = out.splitlines()[1:]
    for task_type in set(types.values()):
        rows = table.filter(pl.col("task_type") == task_type)
        assert f"{task_type:<32}{rows.height:>9}{rows['won'].sum():>7}{rows['won'].mean():>9.3f}" in lines
    assert f"{'all':<32}{4:>9}{table['won'].sum():>7}{table['won'].mean():>9.3f}" in lines
    assert lines[-1] == f"table: {run_dir}/evaluations/round-0-valid_seen.parquet"


@pytest.mark.parametrize("extra, message", [
    (["--checkpoint", "5"], "--checkpoint 5: the checkpoint of round 5 of {run} is not committed (kept: [0])"),
    (["--checkpoint", "/nonexistent/model"], "--checkpoint: /nonexistent/model: policy checkpoint directory not found"),
    (["--checkpoint", "0", "--episodes", "3"], "--episodes 3: expected a positive multiple of evaluation.group_size=2 "
                                               "(e.g. 2)"),
    (["--checkpoint", "0", "--episodes", "40"], "--episodes 40: needs 20 held-out games of 2 episodes, the "
                                                "'valid_seen' split has 2; use at most 4"),
])
def test_bad_arguments_are_named_before_any_work(run_dir, capsys, extra, message):
    assert main(_args(run_dir, *extra)) == 2
    assert capsys.readouterr().err == f"config error: {message.format(run=run_dir)}\n"
