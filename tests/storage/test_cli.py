"""``python -m storage``: demo, show, verify, and a clear error on a broken run."""
from __future__ import annotations

import os

import storage
from storage.cli import main


def test_demo_show_verify(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["demo", run, "--groups", "2", "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "run " + run + ": 1 committed round(s)" in out
    assert "│ 0     ┆ trajectories ┆ 0      ┆ episodes ┆ 32   ┆" in out
    assert main(["demo", run, "--groups", "2", "--shards", "2"]) == 0
    assert "round 0 is already committed: nothing to do" in capsys.readouterr().out
    assert main(["show", run]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"run {run}: 1 committed round(s)",
        "round r: the r-th collect/train cycle (-1: the warm start or fork, and the baseline before round 0); "
        "policy v (policy_version): the checkpoint that sampled the rows, v = r in round r (r-1 with overlap: 1; "
        "-1: the expert's demonstrations); a checkpoint stage's v is the version it made"]
    assert main(["show", run, "--table", "steps", "--round", "0", "--head", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("steps: Schema([('round', Int32), ('policy_version', Int32), ('group_id', Int64)")
    assert "shape: (2, 18)" in out
    assert main(["verify", run]) == 0
    assert capsys.readouterr().out == "4 committed file(s) match their manifests\n"


def test_broken_run_gives_error_and_exit_code(tmp_path, capsys):
    run = str(tmp_path / "run")
    main(["demo", run, "--groups", "1", "--shards", "1"])
    shard = f"{run}/rounds/000000/trajectories/steps/s0000.parquet"
    os.remove(shard)
    capsys.readouterr()
    assert main(["show", run, "--table", "steps"]) == 1
    assert capsys.readouterr().err == f"error: {shard}: named in the stage manifest but missing\n"


def test_readers_refuse_a_path_that_holds_no_run(tmp_path, capsys):
    for command in (["show", str(tmp_path)], ["verify", str(tmp_path / "nope")],
                    ["uncommit", str(tmp_path), "--round", "0", "--stage", "metrics"],
                    ["config", str(tmp_path), "0123"]):
        assert main(command) == 2
        path = command[1]
        assert capsys.readouterr().err == f"error: {path}: not a run directory (no rounds/ or configs/ in it)\n"
    assert not (tmp_path / "nope").exists() and os.listdir(tmp_path) == []  # readers create nothing


def test_show_columns(tmp_path, capsys):
    run = str(tmp_path / "run")
    main(["demo", run, "--groups", "1", "--shards", "1"])
    capsys.readouterr()
    assert main(["show", run, "--table", "episodes", "--columns", "episode_id,won", "--head", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("episodes: Schema([('episode_id', Int64), ('won', Boolean)])\n")
    assert "shape: (1, 2)" in out
    assert main(["show", run, "--table", "episodes", "--columns", "episode_id,nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --columns: table 'episodes' has no column 'nope'; expected")


def test_config_lookup_by_whole_and_section_hash(tmp_path, capsys):
    run = storage.open_run(str(tmp_path / "run"))
    trainer = {"lr": 3e-05, "epochs": 1}
    storage.save_config(run, {"rounds": 2, "trainer": trainer}, {"": "aa11aa11aa11aa11", "trainer": "bb22bb22bb22bb22"})
    storage.save_config(run, {"rounds": 4, "trainer": trainer}, {"": "cc33cc33cc33cc33", "trainer": "bb22bb22bb22bb22"})
    (tmp_path / "run" / "configs" / "notes.yaml").write_text("mine: [unclosed")  # a user's file: not read
    assert main(["config", run.uri, "bb22bb22bb22bb22"]) == 0
    configs = f"{run.root}/configs"
    assert capsys.readouterr().out == (f"# bb22bb22bb22bb22: the 'trainer' section of {configs}/aa11aa11aa11aa11.yaml, "
                                       f"{configs}/cc33cc33cc33cc33.yaml\ntrainer:\n  lr: 3.0e-05\n  epochs: 1\n")
    assert main(["config", run.uri, "cc33cc33cc33cc33"]) == 0
    assert capsys.readouterr().out == (f"# cc33cc33cc33cc33: the whole config of {configs}/cc33cc33cc33cc33.yaml\n"
                                       "rounds: 4\ntrainer:\n  lr: 3.0e-05\n  epochs: 1\n")
    assert main(["config", run.uri, "dd44dd44dd44dd44"]) == 1
    assert "no saved config has hash 'dd44dd44dd44dd44'" in capsys.readouterr().err
