"""Retention after N+2 rounds: old checkpoints and states removed, on record, everything else kept."""
from __future__ import annotations

import os

import pytest

import storage
from pipeline.evaluate_checkpoint import main as evaluate_main
from pipeline.stages.retention import prune
from storage.cli import main as storage_main
from storage.shards import put_atomic
from trainer.config import TrainerConfig

CKPT = ("config.json", "model.safetensors", "train_metrics.jsonl")


def _commit(run, r: int, stage: str, names) -> None:
    run.begin(r, stage)
    for name in names:
        put_atomic(run.fs, f"{run.stage_dir(r, stage)}/{name}", f"{stage} {r} {name}".encode())
    run.commit(r, stage, [run.describe(r, stage, n) for n in names], "cfg", r + 1)


def _round(run, r: int) -> None:
    _commit(run, r, "trajectories", ["steps.bin"])
    _commit(run, r, "checkpoint", CKPT)
    os.makedirs(f"{run.stage_dir(r, 'trainer_state')}/step4")  # kept with keep_state
    _commit(run, r, "evaluation", ["evaluation.bin"])


def test_retention_after_n_plus_2_rounds(tmp_path, capsys):
    run = storage.open_run(str(tmp_path))
    cfg = TrainerConfig(keep_checkpoints=2, keep_every=2)
    _commit(run, -1, "checkpoint", CKPT)  # the warm start: never removed
    done = []
    for r in range(4):  # N + 2 rounds
        _round(run, r)
        done += prune(run, cfg)
    assert done == [0]  # round 1 (policy version 2) is kept by keep_every, rounds 2 and 3 are the newest
    assert "retention: removed the checkpoint(s) of round(s) [0]" in capsys.readouterr().out
    assert sorted(os.listdir(run.stage_dir(0, "checkpoint"))) == ["_MANIFEST.json", "train_metrics.jsonl"]
    assert not os.path.exists(run.stage_dir(0, "trainer_state"))
    m = run.manifest(0, "checkpoint")
    assert [f.path for f in m.files] == ["train_metrics.jsonl"]
    assert [f.path for f in m.retired] == ["config.json", "model.safetensors"]
    for r in (-1, 1, 2, 3):
        assert sorted(os.listdir(run.stage_dir(r, "checkpoint"))) == sorted(("_MANIFEST.json",) + CKPT)
    assert run.is_committed(0, "trajectories") and run.is_committed(0, "evaluation")
    assert run.audit(full=True) == (3 + 4 * 5 - 2, {})  # nothing reported lost (2 files retired)
    assert storage_main(["verify", str(tmp_path)]) == 0
    assert prune(run, cfg) == []  # a second pass changes nothing


def test_a_crash_between_record_and_removal_is_finished_by_the_next_pass(tmp_path):
    run = storage.open_run(str(tmp_path))
    for r in range(3):
        _round(run, r)
    run.retire(0, "checkpoint", keep={"train_metrics.jsonl"}, note="test")
    put_atomic(run.fs, f"{run.stage_dir(0, 'checkpoint')}/model.safetensors", b"left by a crash")
    assert prune(run, TrainerConfig(keep_checkpoints=2)) == []  # already on record
    assert sorted(os.listdir(run.stage_dir(0, "checkpoint"))) == ["_MANIFEST.json", "train_metrics.jsonl"]


def test_a_retired_checkpoint_is_refused_by_name(tmp_path, capsys):
    run = storage.open_run(str(tmp_path))
    for r in range(3):
        _round(run, r)
    prune(run, TrainerConfig(keep_checkpoints=1))
    assert evaluate_main(["--config", "configs/smoke.yaml", f"run_dir={tmp_path}", "--checkpoint", "0"]) == 2
    assert capsys.readouterr().err == (f"config error: --checkpoint 0: the checkpoint of round 0 of {tmp_path} was "
                                       "removed by retention (trainer.keep_checkpoints) (kept: [2])\n")


@pytest.mark.parametrize("key", ["keep_checkpoints", "keep_every"])
def test_negative_retention_is_refused(key):
    with pytest.raises(ValueError, match=rf"TrainerConfig.{key}=-1: expected >= 0"):
        TrainerConfig(**{key: -1})
