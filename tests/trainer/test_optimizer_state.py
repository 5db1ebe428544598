"""AdamW state across rounds: ``keep`` trains two rounds as one continuous run would, ``reset`` starts fresh;
in a run directory the previous round's state survives until the next checkpoint is committed."""
from __future__ import annotations

import dataclasses
import os

import pytest

import storage
from storage.stage_names import STATE_STAGE
from trainer.config import TrainerConfig
from trainer.rounds import train_from_run
from trainer.updates import train_round

pytestmark = pytest.mark.usefixtures("dist_group")
QUIET = dict(progress=False)
# Two mini-batches of 4 rows, in row order: rows[:4] then rows[4:].
CFG = TrainerConfig(kl_coef=0.0, old_logprobs="rollout", lr=1e-3, mini_batch_size=4, micro_batch_size=2,
                    shuffle=False, save_every=0)


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_two_rounds_with_kept_state_equal_one_continuous_run(tiny_model, tmp_path, make_rows, load_weights,
                                                             zero_stage):
    cfg = dataclasses.replace(CFG, zero_stage=zero_stage)
    rows = make_rows(8, seed=3)
    whole = train_round(cfg, tiny_model, rows, tmp_path / "whole", state_dir=tmp_path / "s-whole", **QUIET)
    assert whole.steps == 2 and not whole.continued
    first = train_round(cfg, tiny_model, rows[:4], tmp_path / "r0", state_dir=tmp_path / "s0", **QUIET)
    assert (tmp_path / "s0" / "latest").read_text() == "step1"  # the final state stays for the next round
    second = train_round(cfg, first.checkpoint, rows[4:], tmp_path / "r1", state_dir=tmp_path / "s1",
                         optimizer_from=tmp_path / "s0", **QUIET)
    assert second.continued
    assert second.metrics[0]["loss"] == pytest.approx(whole.metrics[1]["loss"], abs=1e-6)
    continuous, kept = load_weights(whole.checkpoint), load_weights(second.checkpoint)
    assert _max_diff(continuous, kept) < 1e-6

    reset = dataclasses.replace(cfg, optimizer_state="reset")
    fresh = train_round(reset, first.checkpoint, rows[4:], tmp_path / "r1-reset", state_dir=tmp_path / "s1-reset",
                        optimizer_from=tmp_path / "s0", **QUIET)
    assert not fresh.continued and not (tmp_path / "s1-reset").exists()  # reset keeps no state either
    assert _max_diff(continuous, load_weights(fresh.checkpoint)) > 1e-4  # Adam's bias correction restarted
    start = load_weights(first.checkpoint)
    assert _max_diff(start, load_weights(fresh.checkpoint)) > 1e-4


def test_the_previous_state_outlives_a_crashed_round(tiny_model, tmp_path, make_rows, load_weights):
    from tests.trainer.test_rounds import _advantages, commit_advantages

    run = storage.open_run(str(tmp_path / "run"))
    state = {r: run.stage_dir(r, STATE_STAGE) for r in (0, 1)}
    for r in (0, 1):
        commit_advantages(run, r, _advantages(r), r)
    train_from_run(run, 0, CFG, tiny_model, **QUIET)
    assert os.path.isfile(f"{state[0]}/latest")

    def crash(step, total, metrics):
        raise KeyboardInterrupt("killed mid-round")

    policy = run.stage_dir(0, "checkpoint")
    with pytest.raises(KeyboardInterrupt):
        train_from_run(run, 1, CFG, policy, on_step=crash, **QUIET)
    assert not run.is_committed(1, "checkpoint") and os.path.isfile(f"{state[0]}/latest")
    again = train_from_run(run, 1, CFG, policy, **QUIET)
    assert again.continued and run.is_committed(1, "checkpoint")
    assert not os.path.exists(state[0]) and os.path.isfile(f"{state[1]}/latest")  # only the latest state

    # The same two rounds without a crash in another run give the same weights.
    other = storage.open_run(str(tmp_path / "other"))
    for r in (0, 1):
        commit_advantages(other, r, _advantages(r), r)
    train_from_run(other, 0, CFG, tiny_model, **QUIET)
    train_from_run(other, 1, CFG, other.stage_dir(0, "checkpoint"), **QUIET)
    assert _max_diff(load_weights(run.stage_dir(1, "checkpoint")), load_weights(other.stage_dir(1, "checkpoint"))) \
        < 1e-6
