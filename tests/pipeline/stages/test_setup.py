"""Round setup: paths checked before any work, and a base model that is never left half-built."""
from __future__ import annotations

import json
import os
import shutil

import dask
import pytest
from distributed import Client, LocalCluster

from pipeline.config import ConfigError
from pipeline.envs import generate_games
from pipeline.rollout.task import DAEMON_ERROR
from pipeline.run_config import GamesConfig, RunConfig
from pipeline.stages.setup import check_cluster, check_paths
from storage.shards import build_folder


def test_every_bad_game_of_the_data_dir_is_named_in_one_error(tmp_path):
    games = generate_games(str(tmp_path / "data"), games=3, seed=0, max_receptacles=5)
    generate_games(str(tmp_path / "data"), games=1, seed=1, max_receptacles=5, split="valid_seen")
    cfg = RunConfig(games=GamesConfig(data_dir=str(tmp_path / "data")))
    check_paths(cfg)
    with open(games[0], "w") as fh:
        fh.write("{not json")
    data = json.load(open(games[2]))
    json.dump({k: v for k, v in data.items() if k != "grammar"}, open(games[2], "w"))
    with pytest.raises(ConfigError) as err:
        check_paths(cfg)
    lines = str(err.value).splitlines()
    assert lines[0] == f"games.data_dir: {tmp_path}/data/json_2.1.1/train: 2 unusable game folder(s):"
    assert lines[1:] == sorted([f"  {games[0]}: corrupted game file, not JSON (Expecting property name enclosed "
                                "in double quotes: line 1 column 2 (char 1))",
                                f"  {games[2]}: corrupted game file, missing text fields ['grammar']"])


def test_a_game_folder_whose_name_is_not_utf8_is_named_before_any_work(tmp_path):
    games = generate_games(str(tmp_path / "data"), games=2, seed=0, max_receptacles=5)
    generate_games(str(tmp_path / "data"), games=1, seed=1, max_receptacles=5, split="valid_seen")
    trial = os.fsencode(os.path.dirname(games[1]))
    os.rename(trial, trial + b"-\xff\xfe")
    with pytest.raises(ConfigError) as err:
        check_paths(RunConfig(games=GamesConfig(data_dir=str(tmp_path / "data"))))
    assert str(err.value) == (f"games.data_dir: {tmp_path}/data/json_2.1.1/train: 1 unusable game folder: "
                              f"{os.fsdecode(trial)}-\\xff\\xfe: folder name is not valid UTF-8; rename it")


def test_a_killed_build_leaves_no_folder_and_the_next_build_clears_its_leftovers(tmp_path):
    path = str(tmp_path / "base_model")

    def crash(tmp):
        open(os.path.join(tmp, "config.json"), "w").close()
        raise KeyboardInterrupt  # killed half-way

    with pytest.raises(KeyboardInterrupt):
        build_folder(path, crash)
    assert [p.startswith("base_model.tmp-") for p in os.listdir(tmp_path)] == [True]
    build_folder(path, lambda tmp: shutil.copy(__file__, tmp))
    assert os.listdir(tmp_path) == ["base_model"] and os.listdir(path) == [os.path.basename(__file__)]


def test_daemonic_workers_are_a_config_error_before_any_work():
    with dask.config.set({"distributed.worker.daemon": True}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with pytest.raises(ConfigError) as err:
            check_cluster(client, RunConfig())
    assert str(err.value) == DAEMON_ERROR
