"""Base models by hub id: resolved offline from a cache in huggingface_hub's own layout, pinned in the run."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants

from pipeline.config import ConfigError
from pipeline.models import hub
from pipeline.models.tiny_model import make_tiny_model
from pipeline.run_config import RunConfig
from pipeline.stages.setup import check_paths
from tests.pipeline.round_helpers import driver_args, run_to_end

REPO, COMMIT = "gigpo/tiny-qwen2", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def cache(model_files, tmp_path, monkeypatch) -> Path:
    """``HF_HOME`` holding REPO at COMMIT as ``hf download`` lays it out (blobs, a snapshot of links, refs/main);
    offline, in this process and in the drivers a test starts."""
    repo = tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in sorted(model_files.iterdir()):
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / blob)
        (snapshot / f.name).symlink_to(f"../../blobs/{blob}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return snapshot


def test_a_hub_id_resolves_to_its_cached_snapshot(cache, model_files):
    model = hub.resolve(REPO)
    assert (model.id, model.revision, model.commit, model.path) == (REPO, "main", COMMIT, str(cache))
    assert model.files == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in model_files.iterdir()}


def test_a_model_not_in_the_cache_is_a_config_error_naming_the_fetch_command(cache, tmp_path):
    with pytest.raises(ConfigError) as err:
        check_paths(RunConfig(run_dir=str(tmp_path / "run"), base_model="gigpo/absent", base_model_revision="v2"))
    assert str(err.value) == ("base_model: gigpo/absent (revision v2): not in the local Hugging Face cache and not "
                              "downloadable here (LocalEntryNotFoundError); fetch it where the hub is reachable with "
                              "`hf download gigpo/absent --revision v2` into a cache this machine reads (HF_HOME)")


def test_a_resumed_run_uses_the_recorded_commit_and_refuses_changed_files(cache, tmp_path):
    run_root = tmp_path / "run"
    run_root.mkdir()
    hub.record(hub.resolve(REPO), str(run_root))
    (cache.parent.parent / "refs" / "main").write_text("f" * 40)  # main moved on: the run keeps its commit
    assert hub.pinned(REPO, "main", str(run_root)).path == str(cache)
    with pytest.raises(hub.HubModelError, match="^the run started from gigpo/tiny-qwen2 .* not other/model;"):
        hub.pinned("other/model", "main", str(run_root))
    blob = Path(os.path.realpath(cache / "config.json"))
    os.remove(cache / "config.json")
    (cache / "config.json").symlink_to(f"../../blobs/{'e' * 64}")
    shutil.copyfile(blob, blob.with_name("e" * 64))
    with pytest.raises(hub.HubModelError) as err:
        hub.pinned(REPO, "main", str(run_root))
    assert str(err.value) == (f"{REPO} commit {COMMIT}: the cached files differ from the ones the run started with "
                              "(config.json); re-download it")


@pytest.mark.slow
def test_the_driver_runs_from_a_hub_id_and_pins_it(cache, tmp_path):
    run_dir = tmp_path / "run"
    code, out = run_to_end(driver_args(run_dir, f"base_model={REPO}", "rounds=0"))
    assert code == 0, out
    pinned = json.loads((run_dir / hub.RECORD).read_text())
    assert (pinned["id"], pinned["revision"], pinned["commit"]) == (REPO, "main", COMMIT)
    assert not (run_dir / "base_model").exists()  # nothing built: the snapshot is the base model
    assert "before round 0: held-out" in out
    assert out.splitlines()[-1] == (f"done: metrics in {run_dir}/metrics.jsonl; "
                                    f"figures: python -m pipeline.report {run_dir}")
