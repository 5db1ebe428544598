"""A run directory is the project's: marked when made, refused when foreign, swept only of its own names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import storage
from storage.identity import MARK_NAME
from storage.synthetic import synthetic_round


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _committed(root: Path) -> storage.Run:
    run = storage.open_run(str(root))
    steps, episodes = synthetic_round(0, groups=1, group_size=2, seed=1)
    infos = [storage.write_shard(run, 0, "steps", steps, "s0"), storage.write_shard(run, 0, "episodes", episodes, "e0")]
    run.commit(0, "trajectories", infos, "cfg", 0)
    return run


def test_a_new_run_is_marked_once_and_keeps_its_id(tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    with run.claim():
        first = run.id
    mark = json.loads((tmp_path / "run" / MARK_NAME).read_text())
    assert (mark["format"], mark["version"], mark["run_id"]) == ("gigpo-run", 1, first)
    assert len(first) == 12 and int(first, 16) >= 0
    again = storage.open_run(str(tmp_path / "run"))
    with again.claim():
        assert again.id == first


def test_a_folder_with_other_files_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "base_model").mkdir()
    (tmp_path / "base_model" / "weights_notes.txt").write_text("mine")
    (tmp_path / "rounds" / "000000" / "trajectories").mkdir(parents=True)
    (tmp_path / "rounds" / "000000" / "trajectories" / "mine.txt").write_text("mine")
    (tmp_path / "notes.yaml").write_text("mine: 1")
    before = _files(tmp_path)
    with pytest.raises(storage.ForeignDirectory) as err:
        with storage.open_run(str(tmp_path)).claim():
            pass
    assert str(err.value) == (f"{tmp_path}: not empty and not a run (no _RUN.json); it holds notes.yaml; "
                              "choose a new or empty run_dir")
    assert _files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "base_model", "notes.yaml", "rounds"]


def test_a_run_made_before_marks_is_adopted(tmp_path):
    run = _committed(tmp_path)
    (tmp_path / "_LOCK").write_text("")
    with run.claim():
        pass
    assert json.loads((tmp_path / MARK_NAME).read_text())["run_id"] == run.id
    assert run.rounds() == [0] and run.is_committed(0, "trajectories")


def test_a_foreign_file_in_a_stage_folder_stops_the_sweep_and_nothing_is_deleted(tmp_path):
    run = _committed(tmp_path)
    folder = Path(run.stage_dir(0, "trajectories"))
    (folder / "mine.txt").write_text("mine")
    (folder / "steps" / "mine.parquet.txt").write_text("mine")
    before = _files(tmp_path)
    with pytest.raises(storage.ForeignDirectory) as err:
        run.begin(0, "trajectories", overwrite=True)
    assert str(err.value) == (f"{folder}: holds file(s) the project did not write: mine.txt, steps/mine.parquet.txt; "
                              "move them out of the run directory")
    assert _files(tmp_path) == before and run.is_committed(0, "trajectories")


def test_a_commit_beside_a_foreign_file_is_refused_before_the_manifest(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps, _ = synthetic_round(0, groups=1, group_size=2, seed=1)
    info = storage.write_shard(run, 0, "steps", steps, "s0")
    (Path(run.stage_dir(0, "trajectories")) / "mine.txt").write_text("mine")
    with pytest.raises(storage.ForeignDirectory):
        run.commit(0, "trajectories", [info], "cfg", 0)
    assert not run.is_committed(0, "trajectories") and (Path(run.stage_dir(0, "trajectories")) / "mine.txt").exists()


def test_a_sweep_removes_a_crashed_attempts_own_files(tmp_path):
    run = _committed(tmp_path)
    steps, _ = synthetic_round(0, groups=1, group_size=2, seed=2)
    run.begin(0, "trajectories", overwrite=True)
    storage.write_shard(run, 0, "steps", steps, "left-by-a-crash")
    run.begin(0, "trajectories")
    assert _files(Path(run.stage_dir(0, "trajectories"))) == {}
