"""The round driver on a damaged or unwritable run directory: a clear error naming the file, nothing touched.

Runs are made with storage's API (every round's stages committed), so no round is played.
"""
from __future__ import annotations

from pathlib import Path

import storage
from pipeline.records import RoundMetrics
from storage.shards import put_atomic
from storage.synthetic import synthetic_round
from tests.pipeline.round_helpers import driver_args, run_to_end
from tests.storage.mounts import read_only


def committed_run(root: Path, rounds: int = 2) -> storage.Run:
    """A run whose ``rounds`` rounds are committed (trajectories and metrics stages), its lock file made."""
    run = storage.open_run(str(root))
    with run.lock():
        for r in range(rounds):
            steps, episodes = synthetic_round(r, groups=1, group_size=2, seed=r)
            run.commit(r, "trajectories", [storage.write_shard(run, r, "steps", steps, "w0"),
                                           storage.write_shard(run, r, "episodes", episodes, "w0")], "cfg", r)
            put_atomic(run.fs, f"{run.stage_dir(r, 'metrics')}/metrics.json",
                       RoundMetrics(round=r, policy_version=r).to_json().encode())
            run.commit(r, "metrics", [run.describe(r, "metrics", "metrics.json")], "cfg", r)
    return run


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and p.name != "_LOCK"}


def test_cut_manifest_stops_the_driver_naming_it(tmp_path):
    run = committed_run(tmp_path / "run")
    manifest = Path(run.stage_dir(1, "trajectories")) / "_MANIFEST.json"
    manifest.write_text(manifest.read_text()[:200])
    before = _files(tmp_path / "run")
    code, out = run_to_end(driver_args(tmp_path / "run", "--rounds", "3"), timeout=120)
    assert code == 1, out
    assert f"error: {manifest}: not a valid stage manifest (" in out
    assert f"to redo the stage: python -m storage uncommit {tmp_path / 'run'} --round 1 --stage trajectories" in out
    assert "Traceback" not in out and "round 2" not in out
    assert _files(tmp_path / "run") == before


def test_read_only_run_all_committed_is_done_and_unlocked_one_is_named(tmp_path):
    committed_run(tmp_path / "run")
    with read_only(tmp_path / "run", tmp_path / "ro") as ro:
        code, out = run_to_end(driver_args(ro, "--rounds", "2"), timeout=120)
        assert code == 0, out
        assert f"{ro}: all 2 round(s) are committed; nothing to do" in out
    (tmp_path / "empty").mkdir()
    with read_only(tmp_path / "empty", tmp_path / "ro2") as ro2:
        code, out = run_to_end(driver_args(ro2, "--rounds", "1"), timeout=120)
        assert code == 1, out
        assert f"error: {ro2}/_LOCK: cannot create the run's lock file (Read-only file system); " in out
        assert "Traceback" not in out
