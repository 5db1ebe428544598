"""Round -1 through the real driver: expert demonstrations, SFT, the held-out baseline, and round 0 started from
the warm start; then the driver SIGKILLed mid-SFT and resumed.

    .venv/bin/python -m pytest tests/pipeline/test_warm_start.py -q
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psutil
import pytest
import torch
from polars.testing import assert_frame_equal
from safetensors.torch import load_file

import storage
from pipeline.envs import format_response
from pipeline.policy import PolicyConfig, SamplingConfig, load_tokenizer
from pipeline.policy.hf import HFBackend
from tests.pipeline.round_helpers import MAX_STEPS, TASKS, Driver, G, driver_args, group_alive, run_to_end
from tests.pipeline.tracker_files import PPO_KEYS, STEP_KEYS, steps_by_tag

DEMO_TASKS = 2
# One round after the warm start; the planner's demonstrations do not depend on the process (the handcoded
# expert's depend on string hashing); an SFT step size that moves the policy visibly.
WARM = ["rounds=1", "cluster.n_workers=1", "rollout.sampling.max_new_tokens=32", f"warm_start.tasks={DEMO_TASKS}",
        "warm_start.expert=planner", "warm_start.lr=1e-2", "warm_start.epochs=2", "warm_start.mini_batch_size=4",
        "warm_start.micro_batch_size=2"]
BEFORE = ("trajectories", "checkpoint", "evaluation", "metrics")


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: warm start, baseline, round 0. (run directory, driver output)"""
    run_dir = tmp_path_factory.mktemp("warm") / "run"
    code, out = run_to_end(driver_args(run_dir, *WARM), timeout=600)
    assert code == 0, out
    return run_dir, out


def test_demonstrations_sft_and_baseline_come_before_round_0(reference):
    run_dir, out = reference
    started = [line for line in out.splitlines() if line.startswith("round ") and line.endswith("...")]
    assert started == ["round -1: demos ...", "round -1: warm_start ...", "round -1: evaluate ...",
                       "round 0: collect ...", "round 0: advantage ...", "round 0: train ...", "round 0: evaluate ..."]
    run = storage.open_run(str(run_dir))
    assert run.rounds() == [-1, 0] and sorted(run.stages(-1)) == sorted(BEFORE)
    assert [run.manifest(-1, s).policy_version for s in BEFORE] == [-1, 0, 0, -1]

    demos = run.read("steps", [-1]).sort("episode_id", "step")  # the demonstrations, through the read API
    assert demos.height == DEMO_TASKS * MAX_STEPS  # group size 1; no task is won in 3 steps
    assert demos["round"].unique().to_list() == [-1] and demos["policy_version"].unique().to_list() == [-1]
    tok = load_tokenizer(str(run_dir / "base_model"))
    assert [tok.decode(ids, skip_special_tokens=True) for ids in demos["response_ids"]] \
        == [format_response(a) for a in demos["action"]]
    assert demos["action_valid"].all() and demos["response_logprobs"].explode().unique().to_list() == [0.0]
    assert run.read("evaluation", [-1]).select("policy_version", "length").rows() == [(0, MAX_STEPS)]

    records = _metrics(run_dir)
    assert [(m["round"], m["policy_version"]) for m in records] == [(-1, -1), (0, 0)]
    before = records[0]
    assert before["eval_success_rate"] == 0.0 and before["episode_length"] == MAX_STEPS and before["loss"] > 0
    assert sorted(before["stage_seconds"]) == ["demos", "evaluate", "warm_start"]
    assert "before round 0: held-out 0, expert success 0.000, SFT loss " in out


def test_round_0_plays_the_warm_start_and_keeps_it_as_kl_reference(reference):
    run_dir, _ = reference
    run = storage.open_run(str(run_dir))
    row = run.read("steps", [0]).sort("episode_id", "step").row(0, named=True)
    assert run.read("steps", [0]).height == TASKS * G * MAX_STEPS
    scores = {}
    for name, path in (("warm", run.stage_dir(-1, "checkpoint")), ("base", str(run_dir / "base_model"))):
        scorer = HFBackend(path, PolicyConfig(), SamplingConfig(temperature=1.0))
        scores[name] = scorer.score(row["prompt_ids"], row["response_ids"])
    assert scores["warm"] == pytest.approx(row["response_logprobs"], abs=1e-4)
    assert scores["base"] != pytest.approx(row["response_logprobs"], abs=1e-3)
    first = json.loads((Path(run.stage_dir(0, "checkpoint")) / "train_metrics.jsonl").read_text().splitlines()[0])
    assert first["kl_loss"] == pytest.approx(0.0, abs=1e-7)  # the reference is the policy round 0 starts from


ANNOUNCED = [r"train: starting 1 rank\(s\) \(imports, model load, DeepSpeed engine\) \.\.\.",
             r"rank 0: imports done in \d+\.\d s",
             r"rank 0: \d+ rows read in \d+\.\d s; model loaded and DeepSpeed engine built in \d+\.\d s"]
# The warm start's trainer process stays up; its SFT engine is not carried into RL (another config).
KEPT = [r"train: the round goes to the 1 resident rank\(s\) \.\.\.", ANNOUNCED[2]]
ROUND_FIELDS = ["anchor_groups_per_group", "anchored_share", "clip_fraction", "entropy", "episode_length",
                "eval_success_rate", "format_error_share", "grad_norm", "kl", "largest_anchor_group", "loss",
                "mean_abs_adv_episode", "mean_abs_adv_step", "nothing_happens_share", "response_length", "round",
                "success_rate", "train_steps", "train_tokens_per_s", "generate_seconds", "env_seconds",
                "policy_load_seconds"]  # numeric in rounds -1 and 0
ROUND_0_ONLY = ["advantage_steps_per_s_per_core", "anchor_pure_share", "env_steps_per_s", "impure_step_share",
                "missed_revisit_share", "rollout_tokens_per_s", "states_per_anchor_group"]
STAGES = ["advantage", "collect", "demos", "evaluate", "train", "warm_start"]


def _follows(lines: list[str], start: str, patterns: list[str]) -> None:
    """The lines right after ``start`` match ``patterns``, in order."""
    i = lines.index(start)
    got = lines[i + 1:i + 1 + len(patterns)]
    assert len(got) == len(patterns) and all(re.fullmatch(p, line) for p, line in zip(patterns, got)), got


def test_each_training_is_announced_before_its_first_step_and_nothing_draws_bars_in_a_pipe(reference):
    _, out = reference
    lines = out.splitlines()
    _follows(lines, "round -1: warm_start ...", ANNOUNCED + [r"round -1 step 1/\d+ \(global 1\): loss .*"])
    _follows(lines, "round 0: train ...", KEPT + [r"rank 0: round-start log-probs in \d+\.\d s",
                                                        r"round 0 step 1/\d+ \(global 1\): loss .*"])
    assert "%|" not in out and "Loading weights" not in out and "Writing model shards" not in out


def test_tensorboard_has_the_sft_and_rl_steps_on_their_own_axes_and_no_figure_zero_by_construction(reference):
    run_dir, _ = reference
    sft_steps, rl_steps = (m["train_steps"] for m in _metrics(run_dir))
    tb = run_dir / "tensorboard"
    assert steps_by_tag(tb / "sft") == {f"sft/{k}": list(range(1, sft_steps + 1)) for k in STEP_KEYS}
    assert steps_by_tag(tb / "train") == {f"train/{k}": list(range(1, rl_steps + 1))
                                          for k in sorted(STEP_KEYS + PPO_KEYS)}
    assert steps_by_tag(tb / "rounds") == {k: [-1, 0] for k in ROUND_FIELDS if k not in ("kl", "clip_fraction")} \
        | {"kl": [0], "clip_fraction": [0]} | {k: [0] for k in ROUND_0_ONLY} \
        | {f"stage_seconds/{s}": [-1] if s in ("demos", "warm_start") else [0] if s != "evaluate" else [-1, 0]
           for s in STAGES}
    assert json.loads((tb / "_logged.json").read_text()) == {"sft": sft_steps, "train": rl_steps, "rounds": 0}


def _trainer_of(pgid: int, round: int) -> bool:
    for proc in group_alive(pgid):
        try:
            if proc.cmdline()[1:3] == ["-m", "trainer"] and f"--round={round}" in proc.cmdline():
                return True
        except psutil.Error:
            pass
    return False


def test_driver_killed_during_sft_resumes_without_redoing_the_demonstrations(reference, tmp_path):
    ref_dir, _ = reference
    run_dir = tmp_path / "run"
    args = driver_args(run_dir, *WARM)
    driver = Driver(args)
    try:
        driver.wait_line("round -1: warm_start ...", timeout=300)
        deadline = time.monotonic() + 120
        while not _trainer_of(driver.proc.pid, -1):
            assert time.monotonic() < deadline and driver.proc.poll() is None, driver.output
            time.sleep(0.01)
        time.sleep(0.5)
        left = driver.kill()
    finally:
        driver.cleanup()
    assert not left, f"still running after SIGKILL of the group: {[p.pid for p in left]}"
    run = storage.open_run(str(run_dir))
    assert sorted(run.stages(-1)) == ["trajectories"]
    demos_commit = run.manifest(-1, "trajectories").created_at

    code, out = run_to_end([*args, "--rounds", "0"], timeout=600)  # round -1 only: what the kill interrupted
    assert code == 0, out
    assert "round -1: demos (committed)" in out and "round -1: warm_start ..." in out
    assert run.manifest(-1, "trajectories").created_at == demos_commit
    ref = storage.open_run(str(ref_dir))
    for table in ("steps", "episodes", "evaluation"):
        key = ["episode_id", "step"] if table == "steps" else ["episode_id"]
        assert_frame_equal(run.read(table, [-1]).sort(key), ref.read(table, [-1]).sort(key), check_exact=True)
    assert [m["round"] for m in _metrics(run_dir)] == [-1]
    weights = [load_file(Path(r.stage_dir(-1, "checkpoint")) / "model.safetensors") for r in (run, ref)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the resumed SFT, bit for bit


def test_the_starting_policy_never_changes_once_round_0_is_collected(tmp_path, capsys):
    from pipeline.run_config import RunConfig, WarmStartConfig
    from pipeline.stages.warm_start import warm_start
    from storage.synthetic import synthetic_round

    run, base = storage.open_run(str(tmp_path / "run")), str(tmp_path / "base")
    on, off = RunConfig(warm_start=WarmStartConfig()), RunConfig()
    assert warm_start(None, run, off, [], base) == base
    steps, _ = synthetic_round(0, groups=1, group_size=2)
    run.commit(0, "trajectories", [storage.write_shard(run, 0, "steps", steps, "s")], "c", 0)
    assert warm_start(None, run, on, [], base) == base  # round 0 played the base model: no warm start now
    assert "no warm start or fork is made now" in capsys.readouterr().err
    run.commit(-1, "checkpoint", [], "c", 0)
    assert warm_start(None, run, off, [], base) == run.stage_dir(-1, "checkpoint")  # kept, whatever the config
