"""Offline game generator and ALFWorld data-directory collection."""
from __future__ import annotations

import filecmp
import json
import os
import re
import shutil

import alfworld.gen.constants as C
import pytest

from pipeline.envs.alfworld import GameFileError
from pipeline.envs.alfworld_gen import GenConfig, generate_games, main
from pipeline.envs.data import AlfworldDataConfig, collect_games, task_id
from pipeline.envs.tasks import TASK_TYPES


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("gen"))
    generate_games(out, games=6, seed=3, min_receptacles=4, max_receptacles=7)
    return out


def _trials(root: str, split: str = "train") -> list[str]:
    base = os.path.join(root, "json_2.1.1", split)
    return sorted(os.path.join(base, t, r) for t in os.listdir(base) for r in os.listdir(os.path.join(base, t)))


def test_one_game_per_task_type_in_alfworlds_layout(root):
    trials = _trials(root)
    assert len(trials) == 6
    types = [json.load(open(os.path.join(t, "traj_data.json")))["task_type"] for t in trials]
    assert sorted(types) == sorted(TASK_TYPES)
    for trial, task_type in zip(trials, types):
        assert os.path.basename(os.path.dirname(trial)).startswith(task_type + "-")
        assert sorted(os.listdir(trial)) == ["game.tw-pddl", "initial_state.pddl", "traj_data.json"]
        game = json.load(open(os.path.join(trial, "game.tw-pddl")))
        assert game["solvable"] is True and len(game["walkthrough"]) >= 2
        assert game["pddl_problem"] == open(os.path.join(trial, "initial_state.pddl")).read()
        traj = json.load(open(os.path.join(trial, "traj_data.json")))
        sentence = traj["turk_annotations"]["anns"][0]["task_desc"]
        assert f"Your task is to: {sentence}." in game["grammar"]
        assert traj["pddl_params"]["object_target"].lower() in sentence


def test_households_have_closed_openables_and_bounded_receptacles(root):
    for trial in _trials(root):
        problem = open(os.path.join(trial, "initial_state.pddl")).read()
        receptacles = re.findall(r"^\s*(\w+) - receptacle$", problem, flags=re.M)
        assert 4 <= len(receptacles) <= 7
        classes = [r.split("_bar_")[0] for r in receptacles]
        openable = sorted(r for r, c in zip(receptacles, classes) if c in C.OPENABLE_CLASS_LIST)
        assert sorted(re.findall(r"\(openable (\w+)\)", problem)) == openable
        assert "(opened " not in problem
        assert set(classes) <= set(C.RECEPTACLES) | {"Sink", "Bathtub"}


def test_generation_is_deterministic_for_a_seed(root, tmp_path):
    again = str(tmp_path / "again")
    generate_games(again, games=6, seed=3, min_receptacles=4, max_receptacles=7)
    for a, b in zip(_trials(root), _trials(again)):
        assert os.path.relpath(a, root) == os.path.relpath(b, again)
        names = sorted(os.listdir(a))
        assert sorted(filecmp.cmpfiles(a, b, names, shallow=False)[0]) == names
    other = str(tmp_path / "other")
    generate_games(other, games=1, seed=4, min_receptacles=4, max_receptacles=7)
    first = lambda r: open(os.path.join(_trials(r)[0], "initial_state.pddl")).read()  # noqa: E731
    assert first(other) != first(root)


def test_games_solved_on_dask_workers_are_the_same_games(root, tmp_path):
    from distributed import Client, LocalCluster

    out = str(tmp_path / "dask")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        paths = generate_games(out, games=6, seed=3, min_receptacles=4, max_receptacles=7, client=client)
    serial = generate_games(root, games=6, seed=3, min_receptacles=4, max_receptacles=7)  # on disk already
    assert [os.path.relpath(p, out) for p in paths] == [os.path.relpath(p, root) for p in serial]
    for a, b in zip(_trials(root), _trials(out)):
        names = sorted(os.listdir(a))
        assert sorted(filecmp.cmpfiles(a, b, names, shallow=False)[0]) == names


def test_rerun_keeps_the_games_on_disk(root):
    games = collect_games(AlfworldDataConfig(root))
    stamps = [os.stat(g).st_mtime_ns for g in games]
    again = generate_games(root, games=6, seed=3, min_receptacles=4, max_receptacles=7)
    assert sorted(again) == games
    assert [os.stat(g).st_mtime_ns for g in games] == stamps


def test_command_line_writes_games(tmp_path, capsys):
    assert main([str(tmp_path), "--games", "2", "--seed", "1", "--split", "valid_seen",
                 "--task-types", "pick_cool_then_place_in_recep", "--receptacles", "3", "5"]) == 0
    trials = _trials(str(tmp_path), "valid_seen")
    assert [os.path.basename(t) for t in trials] == ["trial_G1_000000", "trial_G1_000001"]
    assert all("pick_cool_then_place_in_recep-" in t for t in trials)
    assert "wrote 2 games" in capsys.readouterr().out


def test_generator_config_errors_name_the_field():
    with pytest.raises(ValueError, match="GenConfig.task_types: unknown ALFWorld task type 'pick_up'"):
        GenConfig(task_types=("pick_up",))
    with pytest.raises(ValueError, match="min_receptacles <= max_receptacles <= 25"):
        GenConfig(min_receptacles=5, max_receptacles=30)
    with pytest.raises(ValueError, match="GenConfig.split"):
        GenConfig(split="test")


def test_collect_games_filters_like_alfworld(root, tmp_path):
    games = collect_games(AlfworldDataConfig(root))
    assert len(games) == 6 and games == sorted(games)
    assert [task_id(g) for g in games] == [os.path.relpath(t, os.path.join(root, "json_2.1.1", "train"))
                                           for t in _trials(root)]
    two = collect_games(AlfworldDataConfig(root, task_types=("pick_two_obj_and_place", "look_at_obj_in_light")))
    assert sorted(task_id(g).split("-")[0] for g in two) == ["look_at_obj_in_light", "pick_two_obj_and_place"]
    assert collect_games(AlfworldDataConfig(root, max_games=2)) == games[:2]

    copy = str(tmp_path / "copy")
    shutil.copytree(root, copy)
    trials = _trials(copy)
    _edit_game(trials[0], solvable=False)  # unsolvable: skipped
    _edit_game(trials[1], solvable=None)  # never checked: skipped
    os.remove(os.path.join(trials[2], "game.tw-pddl"))  # missing game file: skipped
    moved = trials[3].replace("/train/", "/train/movable_")  # ALFWorld skips movable/Sliced trials
    os.makedirs(os.path.dirname(os.path.dirname(moved)), exist_ok=True)
    shutil.move(os.path.dirname(trials[3]), os.path.dirname(moved))
    kept = collect_games(AlfworldDataConfig(copy))
    assert [os.path.dirname(g) for g in kept] == trials[4:]


def _edit_game(trial: str, **fields) -> None:
    path = os.path.join(trial, "game.tw-pddl")
    data = json.load(open(path))
    data.update(fields)
    json.dump(data, open(path, "w"))


def test_bad_data_directories_name_the_path(root, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(GameFileError, match=f"{missing}: ALFWorld data directory not found"):
        collect_games(AlfworldDataConfig(str(missing)))
    with pytest.raises(GameFileError, match=f"{tmp_path}/json_2.1.1/valid_unseen: missing split folder"):
        collect_games(AlfworldDataConfig(str(tmp_path), split="valid_unseen"))
    copy = str(tmp_path / "copy")
    shutil.copytree(root, copy)
    trial = _trials(copy)[0]
    open(os.path.join(trial, "game.tw-pddl"), "w").write("{not json")
    with pytest.raises(GameFileError, match=f"{trial}/game.tw-pddl: corrupted game file"):
        collect_games(AlfworldDataConfig(copy))
    json.dump({"task_type": "pick_up_everything"}, open(os.path.join(trial, "traj_data.json"), "w"))
    with pytest.raises(GameFileError, match=f"{trial}/traj_data.json: unknown task type 'pick_up_everything'"):
        collect_games(AlfworldDataConfig(copy))
    with pytest.raises(GameFileError, match="json_2.1.1/train: no solvable games of task types"):
        collect_games(AlfworldDataConfig(_empty_split(tmp_path)))
    with pytest.raises(ValueError, match="AlfworldDataConfig.task_types: unknown ALFWorld task type 'cook'"):
        AlfworldDataConfig(root, task_types=("cook",))


def _empty_split(tmp_path) -> str:
    os.makedirs(tmp_path / "empty" / "json_2.1.1" / "train")
    return str(tmp_path / "empty")
