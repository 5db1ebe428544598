"""A committed checkpoint with a flipped byte is refused, naming the file, before any process loads it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import storage
from pipeline.models.tiny_model import make_tiny_model
from pipeline.policy import PolicyConfig, SamplingConfig, load_policy, make_backend, release_policy
from pipeline.rollout.config import RolloutConfig
from pipeline.run_config import ClusterConfig
from pipeline.stages.collect import collect
from pipeline.stages.train import train
from trainer.config import TrainerConfig


def committed_checkpoint(root: Path) -> tuple[storage.Run, str]:
    """Round 0's checkpoint stage of a run: the tiny model's files, committed with their SHA-256."""
    run = storage.open_run(str(root / "run"))
    path = make_tiny_model(run.stage_dir(0, "checkpoint"), seed=0)
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    run.commit(0, "checkpoint", [run.describe(0, "checkpoint", f) for f in files], "cfg", 1)
    return run, str(path)


def test_flipped_byte_in_committed_weights_is_named_before_load(tmp_path):
    run, path = committed_checkpoint(tmp_path)
    policy, sampling = PolicyConfig(), SamplingConfig(max_new_tokens=4)
    assert load_policy(path, policy, sampling).max_model_len > 0  # intact: it loads
    release_policy("restart")
    weights = f"{path}/model.safetensors"
    data = bytearray(open(weights, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(weights, "wb").write(bytes(data))
    named = rf"^{re.escape(weights)}: SHA-256 differs from the manifest \(corrupted\)$"
    with pytest.raises(storage.CorruptShard, match=named):  # a rollout or evaluation worker
        load_policy(path, policy, sampling)
    with pytest.raises(storage.CorruptShard, match=named):
        make_backend(path, policy, sampling)
    with pytest.raises(storage.CorruptShard, match=named):  # the driver, before any rollout task is submitted
        collect(None, run, 1, path, ["game.tw-pddl"], RolloutConfig())
    with pytest.raises(storage.CorruptShard, match=named):  # the driver, before any trainer rank is started
        train(None, run, 1, path, None, TrainerConfig(), ClusterConfig())
    assert not run.is_committed(1, "trajectories") and not run.is_committed(1, "checkpoint")


def test_cut_checkpoint_manifest_is_named(tmp_path):
    run, path = committed_checkpoint(tmp_path)
    manifest = f"{path}/_MANIFEST.json"
    text = open(manifest).read()
    open(manifest, "w").write(text[:100])
    with pytest.raises(storage.CorruptManifest, match=rf"^{re.escape(manifest)}: not a valid stage manifest"):
        make_backend(path, PolicyConfig(), SamplingConfig())
