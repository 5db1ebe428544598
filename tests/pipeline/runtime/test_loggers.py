"""Trackers: live step figures and committed round figures on an SFT, a train and a round axis, each point once
across driver starts (TensorBoard, W&B offline)."""
from __future__ import annotations

import glob
import json

import pytest

import storage
from pipeline.config import ConfigError, load
from pipeline.records import TRAIN_STEPS, RoundMetrics, commit_metrics
from pipeline.run_config import RunConfig
from pipeline.runtime.loggers import Trackers
from pipeline.runtime.trackers import LoggingConfig, WandbConfig
from storage.shards import put_atomic
from tests.pipeline.tracker_files import scalars, tags, wandb_points


def _commit_round(run, r: int, losses: list[float]) -> None:
    """Round ``r`` with a checkpoint stage holding one train step per loss, and its metrics."""
    run.begin(r, "checkpoint")
    lines = "".join(json.dumps({"loss": x, "approx_kl": x / 10}) + "\n" for x in losses)
    put_atomic(run.fs, f"{run.stage_dir(r, 'checkpoint')}/{TRAIN_STEPS}", lines.encode())
    run.commit(r, "checkpoint", [run.describe(r, "checkpoint", TRAIN_STEPS)], "cfg", r + 1)
    commit_metrics(run, RoundMetrics(round=r, policy_version=r, success_rate=0.25 * (r + 1),
                                     loss=sum(losses) / len(losses), train_steps=len(losses)), "cfg")


def _live(trackers, r: int, offset: int, losses: list[float]) -> None:
    """The driver's live step records of round ``r`` (its steps after ``offset`` on their axis)."""
    for s, x in enumerate(losses, 1):
        trackers.step({"step": s, "total": len(losses), "loss": x, "approx_kl": x / 10, "round": r, "tag": "t",
                       "global_step": offset + s})


def test_tensorboard_has_an_sft_a_train_and_a_round_axis(tmp_path):
    run = storage.open_run(str(tmp_path))
    _commit_round(run, -1, [4.0, 3.0])  # the warm start's SFT steps
    _commit_round(run, 0, [0.5, 0.25, 0.125])
    with Trackers(LoggingConfig(tensorboard=True), run) as trackers:
        assert trackers.catch_up() == [-1, 0]
        _commit_round(run, 1, [0.1, 0.2, 0.3])
        assert trackers.catch_up() == [1] and trackers.catch_up() == []
    tb = tmp_path / "tensorboard"
    assert tags(tb / "sft") == ["sft/loss"]  # sft/approx_kl is 0 by construction: not logged
    assert scalars(tb / "sft", "sft/loss") == [(1, 4.0), (2, 3.0)]
    assert scalars(tb / "train", "train/loss") == [(1, 0.5), (2, 0.25), (3, 0.125), (4, 0.1), (5, 0.2), (6, 0.3)]
    assert scalars(tb / "train", "train/approx_kl")[-1] == (6, 0.03)
    assert scalars(tb / "rounds", "success_rate") == [(-1, 0.0), (0, 0.25), (1, 0.5)]
    assert scalars(tb / "rounds", "round") == [(-1, -1.0), (0, 0.0), (1, 1.0)]
    assert "kl" not in tags(tb / "rounds") and "clip_fraction" not in tags(tb / "rounds")  # None: not logged
    assert [len(glob.glob(str(tb / axis / "events.out.tfevents.*"))) for axis in ("sft", "train", "rounds")] \
        == [1, 1, 1]
    assert json.loads((tb / "_logged.json").read_text()) == {"sft": 2, "train": 6, "rounds": 1}


def test_live_steps_are_logged_as_they_come_and_a_restart_logs_each_point_once(tmp_path):
    run = storage.open_run(str(tmp_path))
    _commit_round(run, 0, [0.5, 0.25])
    config = {"trainer": {"kl_coef": 0.0}}
    with Trackers(LoggingConfig(tensorboard=True), run, config) as trackers:
        assert trackers.catch_up() == [0]
        _live(trackers, 1, 2, [0.4, 0.3, 0.2])  # round 1 trains: each step at once, before any commit
        assert scalars(tmp_path / "tensorboard/train", "train/loss")[2:] == [(3, 0.4), (4, 0.3), (5, 0.2)]
    record = tmp_path / "tensorboard/_logged.json"
    assert json.loads(record.read_text()) == {"train": 5, "rounds": 0}
    # The driver died after flushing step 5 but before recording it; the next one trains round 1 again.
    record.write_text(json.dumps({"train": 4, "rounds": 0}))
    with Trackers(LoggingConfig(tensorboard=True), run, config) as trackers:
        _live(trackers, 1, 2, [0.4, 0.3, 0.25])  # steps 3 and 4 are held: only step 5 is written, once
        _commit_round(run, 1, [0.4, 0.3, 0.25])
        assert trackers.catch_up() == [1]
    tb = tmp_path / "tensorboard"
    assert scalars(tb / "train", "train/loss") == [(1, 0.5), (2, 0.25), (3, 0.4), (4, 0.3), (5, 0.25)]
    assert tags(tb / "train") == ["train/approx_kl", "train/loss"]  # the kl_loss of kl_coef 0: not logged
    assert scalars(tb / "rounds", "round") == [(0, 0.0), (1, 1.0)]
    assert json.loads(record.read_text()) == {"train": 5, "rounds": 1}


def test_wandb_offline_run_has_each_point_once_across_restarts(tmp_path):
    pytest.importorskip("wandb")
    run = storage.open_run(str(tmp_path))
    _commit_round(run, -1, [4.0, 3.0])
    _commit_round(run, 0, [0.5, 0.25])
    logging = LoggingConfig(wandb=WandbConfig(mode="offline"))
    with Trackers(logging, run, {"rounds": 3}) as trackers:
        assert trackers.catch_up() == [-1, 0]
        _live(trackers, 1, 2, [0.125])
    with Trackers(logging, run, {"rounds": 3}) as trackers:  # a restart: round 1 trains again, then commits
        _live(trackers, 1, 2, [0.125, 0.0625])
        _commit_round(run, 1, [0.125, 0.0625])
        assert trackers.catch_up() == [1]
    run_id = (tmp_path / "wandb/_run_id").read_text()
    assert not (tmp_path / "wandb/wandb").exists()  # W&B's files straight in RUN/wandb
    assert len(glob.glob(str(tmp_path / f"wandb/offline-run-*/run-{run_id}.wandb"))) == 2  # one W&B run, resumed
    assert wandb_points(tmp_path / "wandb") == [("sft/step", 1), ("sft/step", 2), ("round", -1), ("train/step", 1),
                                                 ("train/step", 2), ("round", 0), ("train/step", 3),
                                                 ("train/step", 4), ("round", 1)]
    assert json.loads((tmp_path / "wandb/_logged.json").read_text()) == {"sft": 2, "train": 4, "rounds": 1}


def test_logging_keys_are_checked_on_load(monkeypatch):
    with pytest.raises(ConfigError, match=r"logging.wandb.mode must be one of \('online', 'offline'\), got 'cloud'"):
        load(RunConfig, None, ["logging.wandb.mode=cloud"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"logging.wandb is set but the wandb package is not installed"):
        load(RunConfig, None, ["logging.wandb.project=x"])
