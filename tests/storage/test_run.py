"""Run directory: write, commit, scan on local, file:// and memory:// filesystems."""
from __future__ import annotations

import hashlib
import pickle

import polars as pl
import pytest

import storage
from storage.synthetic import synthetic_round


def _commit_round(run, r, groups=2, shards=2):
    infos, frames = [], []
    for s in range(shards):
        steps, episodes = synthetic_round(r, groups=groups, group_size=4, seed=10 * r + s, first_group=s * groups)
        infos += [storage.write_shard(run, r, "steps", steps, f"w{s}"),
                  storage.write_shard(run, r, "episodes", episodes, f"w{s}")]
        frames.append(steps)
    run.commit(r, "trajectories", infos, config_hash="cfg", policy_version=r)
    return pl.concat(frames)


@pytest.mark.parametrize("scheme", ["path", "file", "memory"])
def test_roundtrip_on_each_filesystem(tmp_path, scheme):
    uri = {"path": str(tmp_path / "run"), "file": f"file://{tmp_path}/run", "memory": f"memory://{tmp_path.name}/run"}[scheme]
    run = storage.open_run(uri)
    written = _commit_round(run, 0)
    got = run.scan("steps", rounds=[0]).sort("episode_id", "step").collect()
    assert got.equals(written.sort("episode_id", "step"))
    assert run.rounds() == [0]
    manifest = run.manifest(0, "trajectories")
    assert manifest.rows("steps") == written.height
    assert manifest.tables() == ["episodes", "steps"]
    assert [f.path for f in manifest.files] == ["episodes/w0.parquet", "episodes/w1.parquet",
                                                 "steps/w0.parquet", "steps/w1.parquet"]


def test_scan_selects_rounds_and_projects(tmp_path):
    run = storage.open_run(str(tmp_path))
    r0, r1 = _commit_round(run, 0), _commit_round(run, 1)
    assert run.scan("steps").select(pl.len()).collect().item() == r0.height + r1.height
    per_round = run.scan("steps").group_by("round").agg(pl.len()).sort("round").collect()
    assert per_round.rows() == [(0, r0.height), (1, r1.height)]
    assert run.scan("steps", rounds=[1]).select("reward").collect()["reward"].sum() == pytest.approx(r1["reward"].sum())


def test_uncommitted_shards_are_invisible(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps, _ = synthetic_round(0, groups=1, group_size=2)
    storage.write_shard(run, 0, "steps", steps, "w0")
    assert run.rounds() == []
    assert run.scan("steps").collect().height == 0
    with pytest.raises(storage.StageNotCommitted, match="round 0 has no committed 'trajectories'"):
        run.scan("steps", rounds=[0])


def test_commit_twice_is_a_noop_and_other_content_is_refused(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps, _ = synthetic_round(0, groups=1, group_size=2)
    info = storage.write_shard(run, 0, "steps", steps, "w0")
    first = run.commit(0, "trajectories", [info], "cfg", 0)
    again = run.commit(0, "trajectories", [info], "cfg", 0)
    assert again == first and again.created_at == first.created_at
    with pytest.raises(storage.StageCommitted, match="already committed with other files or config"):
        run.commit(0, "trajectories", [info], "other-cfg", 0)


def test_writing_into_committed_stage_needs_overwrite(tmp_path):
    run = storage.open_run(str(tmp_path))
    _commit_round(run, 0)
    steps, _ = synthetic_round(0, groups=1, group_size=2, seed=5)
    with pytest.raises(storage.StageCommitted, match="call run.begin"):
        storage.write_shard(run, 0, "steps", steps, "w9")
    with pytest.raises(storage.StageCommitted, match="pass overwrite=True"):
        run.begin(0, "trajectories")
    run.begin(0, "trajectories", overwrite=True)
    assert not run.is_committed(0, "trajectories")
    info = storage.write_shard(run, 0, "steps", steps, "w9")
    run.commit(0, "trajectories", [info], "cfg2", 0)
    assert run.read("steps", rounds=[0]).sort("episode_id", "step").equals(steps.sort("episode_id", "step"))


def test_crash_leftovers_are_ignored_then_swept(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps, _ = synthetic_round(0, groups=1, group_size=2)
    storage.write_shard(run, 0, "steps", steps, "crashed-attempt")
    folder = tmp_path / "rounds" / "000000" / "trajectories" / "steps"
    (folder / ".tmp-deadbeef-w0.parquet").write_bytes(b"half a file")
    run.begin(0, "trajectories")
    assert list(folder.parent.iterdir()) == []
    info = storage.write_shard(run, 0, "steps", steps, "w0")
    storage.write_shard(run, 0, "steps", steps, "zombie")  # a task that was given up on, finishing late
    run.commit(0, "trajectories", [info], "cfg", 0)
    assert sorted(p.name for p in folder.iterdir()) == ["w0.parquet"]
    assert run.read("steps").height == steps.height


def test_retried_shard_replaces_the_first_write(tmp_path):
    run = storage.open_run(str(tmp_path))
    a, _ = synthetic_round(0, groups=1, group_size=2, seed=1)
    b, _ = synthetic_round(0, groups=1, group_size=2, seed=2)
    storage.write_shard(run, 0, "steps", a, "w0")
    info = storage.write_shard(run, 0, "steps", b, "w0")
    run.commit(0, "trajectories", [info], "cfg", 0)
    assert run.read("steps").sort("episode_id", "step").equals(b.sort("episode_id", "step"))


def test_checkpoint_files_are_committed_with_checksums(tmp_path):
    run = storage.open_run(str(tmp_path))
    folder = tmp_path / "rounds" / "000002" / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    info = run.describe(2, "checkpoint", "config.json")
    assert (info.bytes, info.sha256) == (8, hashlib.sha256(b'{"a": 1}').hexdigest())
    run.commit(2, "checkpoint", [info], "cfg", 2)
    assert run.stages(2)["checkpoint"].files == [info]
    assert run.verify() == 1


def test_run_pickles_as_its_uri(tmp_path):
    run = storage.open_run(str(tmp_path))
    _commit_round(run, 0)
    clone = pickle.loads(pickle.dumps(run))
    assert clone.uri == run.uri and clone.rounds() == [0]

