"""``python -m storage``: demo, show, verify, and a clear error on a broken run."""
from __future__ import annotations

import os

from storage.cli import main


def test_demo_show_verify(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["demo", run, "--groups", "2", "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "run " + run + ": 1 committed round(s)" in out
    assert "│ 0     ┆ trajectories ┆ 0      ┆ episodes ┆ 32   ┆" in out
    assert main(["demo", run, "--groups", "2", "--shards", "2"]) == 0
    assert "round 0 is already committed: nothing to do" in capsys.readouterr().out
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
