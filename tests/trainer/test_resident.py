"""A resident rank's rounds in one process (``trainer.resident.Resident``): the engine it carries from round to
round trains exactly as an engine built from disk; one that is not at the committed round is rebuilt."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

import storage
from storage.stage_names import CHECKPOINT_STAGE, STATE_STAGE
from tests.trainer.test_rounds import _advantages, commit_advantages
from trainer.config import TrainerConfig
from trainer.resident import Resident
from trainer.rounds import train_from_run

pytestmark = pytest.mark.usefixtures("dist_group")
CFG = TrainerConfig(kl_coef=0.01, entropy_coeff=0.01, lr=1e-3, mini_batch_size=4, micro_batch_size=2, save_every=0)
TIMING = ("tokens_per_s", "step_time_s", "mfu")  # wall-clock figures: the only ones allowed to differ


def _run(path, rounds: int = 3) -> storage.Run:
    run = storage.open_run(str(path))
    for r in range(rounds):
        commit_advantages(run, r, _advantages(r), r)
    return run


def _train(run, r: int, cfg, base: str, resident: Resident | None):
    policy = base if r == 0 else run.stage_dir(r - 1, CHECKPOINT_STAGE)
    return train_from_run(run, r, cfg, policy, ref_path=base, progress=False, resident=resident)


def _same_round(a, b, run_a, run_b, r: int, load_weights) -> None:
    """Round ``r`` of two runs: the same checkpoint tensors to the bit, the same step metrics but wall-clock ones."""
    wa, wb = (load_weights(run.stage_dir(r, CHECKPOINT_STAGE)) for run in (run_a, run_b))
    assert sorted(wa) == sorted(wb)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    strip = [{k: v for k, v in m.items() if k not in TIMING} for res in (a, b) for m in res.metrics]
    assert strip[:len(a.metrics)] == strip[len(a.metrics):]
    assert (a.steps, a.resumed_from, a.continued) == (b.steps, b.resumed_from, b.continued)


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_rounds_on_a_resident_equal_rounds_on_engines_built_from_disk(tiny_model, tmp_path, load_weights,
                                                                     zero_stage):
    cfg = dataclasses.replace(CFG, zero_stage=zero_stage)
    cold, warm, resident = _run(tmp_path / "cold"), _run(tmp_path / "warm"), Resident()
    engines, refs = [], []
    for r in range(3):
        a, b = _train(cold, r, cfg, tiny_model, None), _train(warm, r, cfg, tiny_model, resident)
        _same_round(a, b, cold, warm, r, load_weights)
        assert b.continued == (r > 0)  # AdamW's moments carried from round 0 on
        engines.append(resident.held.engine)
        refs.append(resident.ref[1])
    assert engines[0] is engines[1] is engines[2]  # one engine for the three rounds
    assert refs[0] is refs[1] is refs[2]  # the reference model, loaded once
    start, end = load_weights(tiny_model), load_weights(warm.stage_dir(2, CHECKPOINT_STAGE))
    assert max((end[k] - start[k]).abs().max().item() for k in start) > 1e-3  # the rounds did train


def test_a_resident_not_at_the_committed_round_rebuilds_its_engine(tiny_model, tmp_path, load_weights):
    cold, warm, resident = _run(tmp_path / "cold", rounds=4), _run(tmp_path / "warm", rounds=4), Resident()

    def both(r: int, cfg=CFG, res=resident):
        a, b = _train(cold, r, cfg, tiny_model, None), _train(warm, r, cfg, tiny_model, res)
        _same_round(a, b, cold, warm, r, load_weights)
        return b

    # Behind: round 1 is trained elsewhere (not by this resident), then round 2 is asked of it.
    both(0)
    both(1, res=None)
    behind = resident.held.engine
    assert both(2).continued and resident.held.engine is not behind
    # Ahead: round 2's checkpoint is uncommitted (its state stays), then round 2 is asked again.
    ahead = resident.held.engine
    for run in (cold, warm):
        shutil.rmtree(run.stage_dir(2, CHECKPOINT_STAGE))
    again = both(2)
    assert (again.resumed_from, again.metrics) == (again.steps, [])  # the round's final state: nothing left to do
    assert resident.held.engine is not ahead
    # Rewritten: round 2's checkpoint and state are made again elsewhere (another learning rate, the same state
    # tag), then round 3 is asked of the resident that holds the first round 2's engine.
    stale = resident.held.engine
    for run in (cold, warm):
        shutil.rmtree(run.stage_dir(2, CHECKPOINT_STAGE))
        shutil.rmtree(run.stage_dir(2, STATE_STAGE))
    both(2, dataclasses.replace(CFG, lr=2e-3), res=None)
    assert both(3).continued and resident.held.engine is not stale
