"""The round driver end to end, on real processes: rounds of the embedded default through
``dask-submit`` (a rerun, then one round more), the run lock, and configs refused before any work.

    .venv/bin/python -m pytest tests/pipeline/test_round.py -q
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import storage
from tests.pipeline.round_helpers import (CONFIG, DRIVER, ROOT, ROUND_STAGES, TINY, Driver, check_round_tables,
                                          created_at, driver_args, driver_env, run_to_end)

SUBMIT = Path(sys.executable).parent / "dask-submit"
STAGE_LINES = ["collect ...", "advantage ...", "train ...", "evaluate ..."]


def _stage_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("round ") and line.endswith("...")]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_rounds_through_dask_submit_a_rerun_then_one_more_round(tmp_path):
    """Round 0 through dask-submit, a rerun that finds it committed, then ``--rounds 2`` adds round 1 alone."""
    run_dir = tmp_path / "run"
    command = [str(SUBMIT), DRIVER, "--config", CONFIG, f"run_dir={run_dir}", *TINY, "rounds=1"]
    code, out = run_to_end(command, timeout=600)
    assert code == 0, out
    assert "dask-submit: LocalCluster at tcp://" in out
    assert _stage_lines(out) == ["round -1: evaluate ..."] + [f"round 0: {s}" for s in STAGE_LINES]
    run = storage.open_run(str(run_dir))
    assert run.rounds() == [-1, 0]
    assert sorted(run.stages(-1)) == ["evaluation", "metrics"]  # the base model's held-out baseline
    assert run.read("evaluation", [-1]).select("episode_id", "policy_version", "length").rows() == [(0, 0, 3)]
    before = {r: created_at(run, r) for r in (-1, 0)}

    code, out = run_to_end(command, timeout=200)
    assert code == 0, out
    assert f"{run_dir}: all 1 round(s) are committed; nothing to do" in out
    assert _stage_lines(out) == []
    assert {r: created_at(run, r) for r in (-1, 0)} == before

    # --rounds may come between overrides and wins over rounds=1: exactly round 1 is added.
    more = [str(SUBMIT), DRIVER, "--config", CONFIG, f"run_dir={run_dir}", "--rounds", "2", *TINY, "rounds=1"]
    code, out = run_to_end(more, timeout=300)
    assert code == 0, out
    assert _stage_lines(out) == [f"round 1: {s}" for s in STAGE_LINES]
    assert run.rounds() == [-1, 0, 1]
    assert {r: created_at(run, r) for r in (-1, 0)} == before
    for r in (0, 1):
        assert sorted(run.stages(r)) == sorted(ROUND_STAGES)
        assert run.manifest(r, "trajectories").policy_version == r  # round 1 collected with round 0's checkpoint
        check_round_tables(run, r)
    assert run.verify() > 0  # every committed file matches its manifest's checksum

    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(run_dir / "base_model")
    for r in (0, 1):
        model = AutoModelForCausalLM.from_pretrained(run.stage_dir(r, "checkpoint"))
        assert model.num_parameters() == base.num_parameters()

    records = _metrics(run_dir)
    assert [m["round"] for m in records] == [-1, 0, 1] and [m["policy_version"] for m in records] == [-1, 0, 1]
    baseline = records[0]
    assert (baseline["eval_success_rate"], baseline["loss"], sorted(baseline["stage_seconds"])) == (
        0.0, None, ["evaluate"])
    for m in records[1:]:  # no task can be won in 3 steps; every episode is 3 steps long
        assert (m["success_rate"], m["eval_success_rate"], m["episode_length"]) == (0.0, 0.0, 3.0)
        assert sorted(m["stage_seconds"]) == ["advantage", "collect", "evaluate", "train"]


def test_a_second_driver_on_a_locked_run_exits_3(tmp_path):
    run_dir = tmp_path / "run"
    first = Driver(driver_args(run_dir, "rounds=50"))  # still running when the second driver looks (killed below)
    try:
        lock = run_dir / "_LOCK"
        deadline = time.monotonic() + 60
        while f'"pid": {first.proc.pid}' not in (lock.read_text() if lock.exists() else ""):  # taken before setup
            assert time.monotonic() < deadline and first.proc.poll() is None, first.output
            time.sleep(0.05)
        second = subprocess.run(driver_args(run_dir), cwd=ROOT, env=driver_env(), capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 3, second.stderr
        assert second.stderr.startswith(f"error: {run_dir}/_LOCK: the run is locked by another driver (")
        assert f'"pid": {first.proc.pid}' in second.stderr
        assert first.proc.poll() is None  # the first driver goes on
    finally:
        left = first.kill()
        first.cleanup()
    assert not left


@pytest.mark.parametrize("argv, message", [
    (["trainer.lrr=1"],
     "config error: trainer.lrr: unknown key (did you mean 'lr'?); expected one of ['clip_ratio_low', "),
    (["rollout.group_size=0"], "config error: rollout.group_size must be >= 1, got 0\n"),
    (["rounds=-1"], "config error: rounds must be >= 0 and tasks_per_round >= 1, got -1, 2\n"),
    (["--rounds", "-1"], "config error: rounds must be >= 0 and tasks_per_round >= 1, got -1, 2\n"),
    (["rollout.env.max_steps=many"], "config error: rollout.env.max_steps: expected int, got 'many'\n"),
    (["base_model=/nonexistent/model"],
     "config error: base_model: /nonexistent/model: policy checkpoint directory not found\n"),
    (["games.data_dir=/nonexistent/data"],
     "config error: games.data_dir: /nonexistent/data: ALFWorld data directory not found; fetch ALFWorld's data "
     "with `alfworld-download` (into $ALFWORLD_DATA, by default ~/.cache/alfworld)\n"),
    (["trainer.lr=inf"], "config error: trainer.lr: expected a finite number, got inf\n"),
    (["rollout.group_size=1"], "config error: rollout.group_size must be >= 2 with advantage.estimator='gigpo' (its "
                               "advantages compare the episodes of one task), got 1\n"),
    (["overlap=1"], "config error: overlap=1 trains on rows sampled by the policy before the one it starts from, so "
                    "the PPO ratio needs the sampler's log-probs: set trainer.old_logprobs=rollout, got 'recompute'\n"),
    (["overlap=2"], "config error: overlap must be one of (0, 1), got 2\n"),
], ids=["unknown-key", "group-size-0", "rounds-negative", "--rounds-negative", "mistyped", "no-base-model",
        "no-data-dir", "lr-inf", "group-size-1", "overlap-recompute", "overlap-2"])
def test_bad_config_is_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    from pipeline.driver import main

    run_dir = tmp_path / "run"
    monkeypatch.chdir(ROOT)
    assert main(driver_args(run_dir, *argv)[2:]) == 2
    out = capsys.readouterr()
    assert out.err.startswith(message)
    assert out.out == "" and not run_dir.exists()


@pytest.mark.parametrize("override, message", [
    ("rollout.group_size=0", "rollout.group_size must be >= 1, got 0"),
    ("trainer.lr=nan", "trainer.lr: expected a finite number, got nan"),
    ("run_dir=s3://gigpo-runs/run", "run_dir: s3://gigpo-runs/run is not a filesystem path; the games, "
     "checkpoints, the trainer's model files and the trackers need one that the driver and every worker share: use "
     "a local or shared POSIX path (NFS/Lustre)"),
], ids=["group-size-0", "lr-nan", "object-store"])
def test_bad_config_exits_2_from_the_command_line(tmp_path, override, message):
    run_dir = tmp_path / "run"
    done = subprocess.run(driver_args(run_dir, override), cwd=ROOT, env=driver_env(),
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"config error: {message}\n"
    assert not run_dir.exists() and not (ROOT / "gigpo-runs").exists()


def test_committed_stages_made_with_another_config_are_named(tmp_path):
    import dataclasses

    from pipeline.config import config_hash
    from pipeline.driver import kept_with_other_config
    from pipeline.run_config import RunConfig
    from storage.synthetic import synthetic_round

    cfg, run = RunConfig(), storage.open_run(str(tmp_path))
    steps, _ = synthetic_round(0, groups=1, group_size=2)
    run.commit(0, "trajectories", [storage.write_shard(run, 0, "steps", steps, "w0")], config_hash(cfg.rollout), 0)
    assert kept_with_other_config(run, 0, cfg) == []
    assert kept_with_other_config(
        run, 0, dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, lr=1.0))) == []
    changed = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, group_size=2))
    assert kept_with_other_config(run, 0, changed) == ["trajectories"]
