"""Integrity of what is read: flipped bytes, cut manifests, every bad file in one pass, read-only and full disks.

Every case runs on real files; the read-only and full disks are a read-only
bind mount and a size-limited tmpfs (skipped where ``mount`` is refused).
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import storage
from storage import checks, shards
from storage.cli import main, overview
from storage.schemas import SCHEMA_VERSION, TABLE_KEY, VERSION_KEY
from storage.synthetic import synthetic_round
from tests.storage.mounts import fill, read_only, tiny_disk


def _commit(run, r, shards_=1):
    infos = []
    for s in range(shards_):
        steps, episodes = synthetic_round(r, groups=2, group_size=4, seed=10 * r + s, first_group=2 * s)
        infos += [storage.write_shard(run, r, "steps", steps, f"w{s}"),
                  storage.write_shard(run, r, "episodes", episodes, f"w{s}")]
    run.commit(r, "trajectories", infos, "cfg", r)


@pytest.fixture()
def run(tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    for r in (0, 1):
        _commit(run, r)
    return run


def _path(run, r, table="steps", shard="w0"):
    return f"{run.stage_dir(r, 'trajectories')}/{table}/{shard}.parquet"


def flip(path, pos=None) -> None:
    """Flip every bit of one byte (default: the middle one); the size stays the same."""
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if pos is None else pos] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _files(root) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in Path(root).rglob("*") if p.is_file() and p.name != "_LOCK"}


def test_flipped_byte_mid_shard_is_named_by_scan_read_and_show(run, capsys):
    path = _path(run, 0)
    flip(path)
    frame = run.scan("steps")  # sizes, footers and schemas are fine: the page checksum fails at collect
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(path)}: cannot read row group 0 \(.*CRC checksum"):
        frame.collect()
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(path)}: "):
        run.read("steps", rounds=[0])
    assert run.read("steps", rounds=[1]).height == run.manifest(1, "trajectories").rows("steps")
    assert main(["show", run.uri, "--table", "steps"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {path}: cannot read row group 0 (")


def test_no_flipped_byte_is_read_silently(run):
    """A byte changed anywhere in a shard: the read fails naming the file, or reads the same rows."""
    path, good = _path(run, 0), run.read("steps", rounds=[0])
    original = open(path, "rb").read()
    outcomes = {"error": 0, "same": 0}
    for pos in range(0, len(original), 47):
        data = bytearray(original)
        data[pos] ^= 0x01
        open(path, "wb").write(bytes(data))
        try:
            got = run.read("steps", rounds=[0])
        except storage.StorageError as exc:
            assert str(exc).startswith(f"{path}: "), exc
            outcomes["error"] += 1
        else:
            assert got.equals(good), f"byte {pos} of {path} changed and was read without error"
            outcomes["same"] += 1
    assert outcomes["error"] > 0.9 * (outcomes["error"] + outcomes["same"]), outcomes


def test_shard_without_page_checksums_is_read_and_checked_by_sha256(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps, _ = synthetic_round(0, groups=2, group_size=4)
    rel, folder = "steps/old.parquet", run.stage_dir(0, "trajectories")
    os.makedirs(f"{folder}/steps")
    tbl = shards.conform(steps, "steps", rel)
    tbl = tbl.replace_schema_metadata({VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: b"steps"})
    pq.write_table(tbl, f"{folder}/{rel}", compression="zstd")  # as written before page checksums
    info = dataclasses.replace(run.describe(0, "trajectories", rel), table="steps", rows=tbl.num_rows)
    assert info.footer_sha256 == ""
    run.commit(0, "trajectories", [info], "cfg", 0)
    assert run.read("steps").equals(steps)
    flip(f"{folder}/{rel}")
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(folder)}/{rel}: SHA-256 differs from the manifest"):
        run.scan("steps")  # no page checksums to check at collect: the whole file is hashed first


def _break(run):
    """Four faults across two rounds: a flipped byte, a missing file, a truncated file, a cut manifest."""
    for r in (0, 1):
        run.begin(r, "trajectories", overwrite=True)
        _commit(run, r, shards_=2)
    shards.put_atomic(run.fs, f"{run.stage_dir(1, 'metrics')}/m.json", b"{}")
    run.commit(1, "metrics", [run.describe(1, "metrics", "m.json")], "cfg", 1)
    flip(_path(run, 0, "steps", "w0"))
    os.remove(_path(run, 0, "episodes", "w1"))
    size = os.path.getsize(_path(run, 1, "steps", "w1"))
    os.truncate(_path(run, 1, "steps", "w1"), size - 10)
    manifest = f"{run.stage_dir(1, 'metrics')}/_MANIFEST.json"
    text = open(manifest).read()
    open(manifest, "w").write(text[: len(text) // 2])
    return {
        "flipped": f"{_path(run, 0, 'steps', 'w0')}: SHA-256 differs from the manifest (corrupted)",
        "missing": f"{_path(run, 0, 'episodes', 'w1')}: named in the stage manifest but missing",
        "truncated": f"{_path(run, 1, 'steps', 'w1')}: {size - 10} bytes, the manifest says {size} "
                     "(truncated or replaced)",
        "manifest": f"{manifest}: not a valid stage manifest (",
    }


def test_verify_reports_every_bad_file_in_one_pass(run, capsys):
    faults = _break(run)
    assert main(["verify", run.uri]) == 1
    out = capsys.readouterr()
    assert out.out == "4 bad file(s) or manifest(s) among 8 committed file(s)\n"
    lines = out.err.splitlines()
    assert lines[:2] + [lines[3]] == [f"error: {faults[k]}" for k in ("missing", "flipped", "truncated")]
    assert lines[2].startswith(f"error: {faults['manifest']}") and len(lines) == 4
    with pytest.raises(storage.CorruptShard, match=r"^4 of the run's committed file\(s\) or manifest\(s\) are bad:\n"):
        run.verify()


def test_show_flags_missing_and_wrong_size_files(run, capsys):
    faults = _break(run)
    checked, bad = run.audit()  # cheap: sizes only, so the flipped byte is not seen
    assert checked == 8 and list(bad) == [_path(run, 0, "episodes", "w1"),
                                          f"{run.stage_dir(1, 'metrics')}/_MANIFEST.json",
                                          _path(run, 1, "steps", "w1")]
    rows = overview(run, bad).select("round", "stage", "table", "files", "bad").rows()
    assert rows == [(0, "trajectories", "episodes", 2, 1), (0, "trajectories", "steps", 2, 0),
                    (1, "metrics", "(unreadable manifest)", None, 1),
                    (1, "trajectories", "episodes", 2, 0), (1, "trajectories", "steps", 2, 1)]
    assert main(["show", run.uri]) == 1
    out = capsys.readouterr()
    assert out.out.startswith(f"run {run.uri}: 2 committed round(s), 3 bad file(s) or manifest(s)")
    lines = out.err.splitlines()
    assert [lines[0], lines[2]] == [f"error: {faults['missing']}", f"error: {faults['truncated']}"]
    assert lines[1].startswith(f"error: {faults['manifest']}") and len(lines) == 3


def test_cut_manifest_is_named_and_uncommit_redoes_the_stage(run, capsys):
    manifest = f"{run.stage_dir(1, 'trajectories')}/_MANIFEST.json"
    text = open(manifest).read()
    open(manifest, "w").write(text[: len(text) // 2])
    named = rf"^{re.escape(manifest)}: not a valid stage manifest \(.*\); to redo the stage: python -m storage " \
            rf"uncommit {re.escape(run.uri)} --round 1 --stage trajectories$"
    before = _files(run.root)
    for command in (["show", run.uri], ["verify", run.uri], ["show", run.uri, "--table", "steps"]):
        assert main(command) == 1
        assert re.match(named, capsys.readouterr().err.splitlines()[0].removeprefix("error: ")), command
    with pytest.raises(storage.CorruptManifest, match=named):
        with run.lock():  # a writer never builds on it
            pass
    assert _files(run.root) == before

    assert main(["uncommit", run.uri, "--round", "1", "--stage", "trajectories"]) == 0
    assert capsys.readouterr().out == (f"uncommitted round 1 'trajectories': {run.stage_dir(1, 'trajectories')} "
                                       "is empty\n")
    assert os.listdir(run.stage_dir(1, "trajectories")) == [] and run.rounds() == [0]
    _commit(run, 1)  # what the next run does: redo the stage
    assert main(["verify", run.uri]) == 0
    assert capsys.readouterr().out == "4 committed file(s) match their manifests\n"


def test_read_only_run_is_read_and_writes_name_the_path(run, tmp_path):
    with run.lock():  # a driver ran here: the lock file exists
        pass
    steps, _ = synthetic_round(2, groups=1, group_size=2)
    with read_only(Path(run.root), tmp_path / "ro") as ro:
        view = storage.open_run(str(ro))
        with view.lock():  # flock needs no write access: a committed run is found done
            assert view.read("steps").equals(run.read("steps"))
            with pytest.raises(storage.RunNotWritable, match=rf"^{ro}/rounds/000002/trajectories/steps/w0.parquet: "
                                                             r"cannot write \(.*Read-only file system"):
                storage.write_shard(view, 2, "steps", steps, "w0")
            with pytest.raises(storage.RunNotWritable, match=rf"^{ro}/rounds/000001/trajectories: cannot clear the "
                                                             r"stage directory \(.*Read-only file system"):
                view.begin(1, "trajectories", overwrite=True)
        assert view.is_committed(1, "trajectories") and view.verify() == 4
    (tmp_path / "empty").mkdir()
    with read_only(tmp_path / "empty", tmp_path / "ro2") as ro2:
        with pytest.raises(storage.RunNotWritable, match=rf"^{ro2}/_LOCK: cannot create the run's lock file "
                                                         r"\(Read-only file system\); a driver needs a writable run"):
            with storage.open_run(str(ro2)).lock():
                pass


def _tmp_files(root) -> list[str]:
    return [str(p) for p in Path(root).rglob(".tmp-*")]


def test_full_disk_names_the_file_and_commits_nothing(tmp_path):
    with tiny_disk(tmp_path / "disk", "256k") as disk:
        run = storage.open_run(str(disk / "run"))
        folder = run.stage_dir(0, "trajectories")
        with pytest.raises(storage.RunNotWritable, match=rf"^{folder}/steps/w\d+.parquet: cannot write \(.*"
                                                         r"No space left on device"):
            for s in range(100):
                steps, _ = synthetic_round(0, groups=8, group_size=8, seed=s, first_group=8 * s)
                storage.write_shard(run, 0, "steps", steps, f"w{s}")
        assert _tmp_files(disk) == [] and not run.is_committed(0, "trajectories")

        run.begin(0, "trajectories")  # room again: one shard fits, then the disk fills before the commit
        info = storage.write_shard(run, 0, "steps", synthetic_round(0, groups=1, group_size=2)[0], "w0")
        fill(disk)
        with pytest.raises(storage.RunNotWritable, match=rf"^{folder}/_MANIFEST.json: cannot write \(.*"
                                                         r"No space left on device"):
            run.commit(0, "trajectories", [info], "cfg", 0)
        assert _tmp_files(disk) == [] and not run.is_committed(0, "trajectories") and run.rounds() == []


def _checkpoint_stage(run) -> str:
    """Round 0's checkpoint stage: weights and a config file, committed with their SHA-256."""
    folder = run.stage_dir(0, "checkpoint")
    os.makedirs(folder)
    Path(folder, "model.safetensors").write_bytes(bytes(range(256)) * 64)
    Path(folder, "config.json").write_text('{"vocab_size": 8}')
    run.commit(0, "checkpoint", [run.describe(0, "checkpoint", f) for f in ("config.json", "model.safetensors")],
               "cfg", 1)
    return folder


def test_a_verified_checkpoint_is_hashed_again_only_where_a_file_changed(tmp_path, monkeypatch):
    folder = _checkpoint_stage(storage.open_run(str(tmp_path / "run")))
    hashed = []
    real = shards.sha256_of
    monkeypatch.setattr(shards, "sha256_of", lambda fs, path: hashed.append(Path(path).name) or real(fs, path))
    storage.verify_stage_dir(folder, skip=(".safetensors",))
    storage.verify_stage_dir(folder, skip=(".safetensors",))  # written just now (within RACY_S): hashed again
    assert hashed == ["config.json", "config.json"]
    time.sleep(2 * checks.RACY_S)
    storage.verify_stage_dir(folder, skip=(".safetensors",))
    storage.verify_stage_dir(folder)
    assert hashed == ["config.json", "config.json", "config.json", "model.safetensors"]
    hashed.clear()
    storage.verify_stage_dir(folder)  # both unchanged since they were hashed: nothing read
    assert hashed == []
    weights = f"{folder}/model.safetensors"
    before = os.stat(weights)
    flip(weights)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime: the ctime still moved
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(weights)}: SHA-256 differs from the manifest"):
        storage.verify_stage_dir(folder)
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(weights)}: SHA-256 differs from the manifest"):
        storage.verify_stage_dir(folder)  # a failed check is not remembered as passed
    flip(weights)  # the original bytes again, in a file changed since it was hashed: hashed once more
    storage.verify_stage_dir(folder)
    assert hashed == ["model.safetensors"] * 3
