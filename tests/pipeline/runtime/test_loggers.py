"""Trackers: per-step and round metrics on one global step axis, one TensorBoard file per driver, W&B offline."""
from __future__ import annotations

import glob
import json
import struct
import time

import pytest

import storage
from pipeline.config import ConfigError, load
from pipeline.records import TRAIN_STEPS, RoundMetrics, commit_metrics
from pipeline.run_config import RunConfig
from pipeline.runtime.loggers import Trackers
from pipeline.runtime.trackers import LoggingConfig, WandbConfig
from storage.shards import put_atomic


def _commit_round(run, r: int, losses: list[float]) -> None:
    """Round ``r`` with a checkpoint stage holding one train step per loss, and its metrics."""
    run.begin(r, "checkpoint")
    lines = "".join(json.dumps({"loss": x, "approx_kl": x / 10}) + "\n" for x in losses)
    put_atomic(run.fs, f"{run.stage_dir(r, 'checkpoint')}/{TRAIN_STEPS}", lines.encode())
    run.commit(r, "checkpoint", [run.describe(r, "checkpoint", TRAIN_STEPS)], "cfg", r + 1)
    commit_metrics(run, RoundMetrics(round=r, policy_version=r, success_rate=0.25 * (r + 1),
                                     loss=sum(losses) / len(losses), train_steps=len(losses)), "cfg")


def _scalars(folder, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, round(e.value, 6)) for e in events.Scalars(tag)]


def test_tensorboard_steps_run_on_one_axis_across_rounds_in_one_file(tmp_path):
    run = storage.open_run(str(tmp_path))
    _commit_round(run, -1, [4.0, 3.0])  # the warm start's SFT steps
    _commit_round(run, 0, [0.5, 0.25, 0.125])
    with Trackers(LoggingConfig(tensorboard=True), run) as trackers:
        assert trackers.catch_up() == [-1, 0]
        _commit_round(run, 1, [0.1, 0.2, 0.3])
        assert trackers.catch_up() == [1] and trackers.catch_up() == []
    folder = tmp_path / "tensorboard"
    assert _scalars(folder, "sft/loss") == [(1, 4.0), (2, 3.0)]
    assert _scalars(folder, "train/loss") == [(3, 0.5), (4, 0.25), (5, 0.125), (6, 0.1), (7, 0.2), (8, 0.3)]
    assert _scalars(folder, "train/approx_kl")[-1] == (8, 0.03)
    assert _scalars(folder, "success_rate") == [(2, 0.0), (5, 0.25), (8, 0.5)]  # at each round's last step
    assert _scalars(folder, "round") == [(2, -1.0), (5, 0.0), (8, 1.0)]
    assert len(glob.glob(str(folder / "events.out.tfevents.*"))) == 1
    assert json.loads((folder / "_logged_rounds.json").read_text()) == [-1, 0, 1]


def _wandb_history(path: str) -> list[dict]:
    """The history records of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, buf, out = open(path, "rb").read(), 7, b"", []  # 7: the ':W&B' file header
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4:pos + 7])
        buf, pos = buf + raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            rec, buf = pb.Record.FromString(buf), b""
            if rec.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                out.append({k: v for k, v in items.items() if not k.startswith("_")} | {"_step": rec.history.step.num})
    return out


def test_wandb_offline_run_has_the_logged_keys_at_their_steps(tmp_path):
    pytest.importorskip("wandb")
    run = storage.open_run(str(tmp_path))
    _commit_round(run, 0, [0.5, 0.25])
    with Trackers(LoggingConfig(wandb=WandbConfig(mode="offline")), run, {"rounds": 3}) as trackers:
        assert trackers.catch_up() == [0]
    (path,) = glob.glob(str(tmp_path / "wandb/wandb/offline-run-*/run-gigpo-*.wandb"))
    deadline = time.monotonic() + 60
    while len(history := _wandb_history(path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # W&B's own process may still be writing the file
    assert [(h["_step"], h.get("train/loss")) for h in history] == [(1, 0.5), (2, 0.25)]
    assert history[-1]["success_rate"] == 0.25 and history[-1]["round"] == 0
    assert json.loads((tmp_path / "wandb/_logged_rounds.json").read_text()) == [0]


def test_logging_keys_are_checked_on_load(monkeypatch):
    with pytest.raises(ConfigError, match=r"logging.wandb.mode must be one of \('online', 'offline'\), got 'cloud'"):
        load(RunConfig, None, ["logging.wandb.mode=cloud"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"logging.wandb is set but the wandb package is not installed"):
        load(RunConfig, None, ["logging.wandb.project=x"])
