"""Finding playable games in an ALFWorld data directory (``$ALFWORLD_DATA`` layout).

Layout: ``DATA/json_2.1.1/{train,valid_seen,valid_unseen}/<task>/<trial>/``
holding ``traj_data.json`` and ``game.tw-pddl``. The filters are ALFWorld's
own (``AlfredTWEnv.collect_game_files``): movable/sliced trials skipped, the
chosen task types only, solvable games only.

>>> from pipeline.envs.alfworld_gen import generate_games
>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> _ = generate_games(root, games=2, seed=0)
>>> [task_id(g) for g in collect_games(AlfworldDataConfig(root))]  # doctest: +NORMALIZE_WHITESPACE
['look_at_obj_in_light-Statue-None-FloorLamp-227/trial_G0_000001',
 'pick_and_place_simple-PepperShaker-None-SideTable-315/trial_G0_000000']
"""
from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass

import alfworld.gen.goal_library as glib

from pipeline.envs.alfworld import GameFileError, read_game_file
from pipeline.envs.tasks import TASK_TYPES, check_task_types
from pipeline.validators import at_least, choice

SPLITS = ("train", "valid_seen", "valid_unseen")
DATA_SUBDIR = "json_2.1.1"


@dataclass(frozen=True)
class AlfworldDataConfig:
    """Which games of an ALFWorld data directory to play."""

    data_dir: str  # ALFWORLD_DATA root: the folder holding json_2.1.1/
    split: str = "train"  # train (ALFWorld data_path), valid_seen (eval in-distribution), valid_unseen (OOD)
    task_types: tuple[str, ...] = TASK_TYPES  # ALFWorld task types to keep (default: all six)
    max_games: int = 0  # keep the first N games in path order; 0 keeps all

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", data_root(self.data_dir))
        choice(self, "split", SPLITS)
        check_task_types(self.task_types, "AlfworldDataConfig.task_types")
        at_least(self, "max_games", 0)

    @property
    def split_dir(self) -> str:
        """``DATA/json_2.1.1/<split>``."""
        return os.path.join(self.data_dir, DATA_SUBDIR, self.split)


def data_root(value: str) -> str:
    """A data folder setting as a path: ``~`` and ``$VARS`` expanded, ``$ALFWORLD_DATA`` as ALFWorld reads it
    (``~/.cache/alfworld`` when unset).

    >>> default = os.environ.get("ALFWORLD_DATA", data_root("~/.cache/alfworld"))
    >>> data_root("$ALFWORLD_DATA/x") == os.path.join(default, "x")
    True
    """
    env = {"ALFWORLD_DATA": os.path.expanduser("~/.cache/alfworld")} | dict(os.environ)
    return os.path.expanduser(string.Template(value).safe_substitute(env))


def task_id(game_file: str) -> str:
    """Task identity of a game: ``<task folder>/<trial folder>`` (unique inside a split)."""
    trial = os.path.dirname(os.path.abspath(game_file))
    return f"{os.path.basename(os.path.dirname(trial))}/{os.path.basename(trial)}"


def read_task_type(traj_path: str) -> str:
    """``task_type`` of a ``traj_data.json``; unknown to ALFRED or corrupted: error naming the file."""
    try:
        with open(traj_path) as f:
            name = json.load(f)["task_type"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise GameFileError(f"{traj_path}: corrupted traj_data.json, no task_type ({exc!r})") from exc
    if name not in glib.gdict:
        raise GameFileError(f"{traj_path}: unknown task type {name!r}; expected one of {list(TASK_TYPES)}")
    return name


def _keep(root: str, config: AlfworldDataConfig) -> bool:
    if "movable" in root or "Sliced" in root:  # ALFWorld: movable & slice trajectories not supported
        return False
    game = os.path.join(root, "game.tw-pddl")
    if read_task_type(os.path.join(root, "traj_data.json")) not in config.task_types or not os.path.isfile(game):
        return False
    try:
        data = read_game_file(game)
    except GameFileError as exc:
        if "unsolvable" in str(exc):
            return False
        raise
    return data.get("solvable") is not None  # ALFWorld skips games never checked for solvability


def _check_utf8(path: str) -> None:
    """Refuse a path whose bytes are not UTF-8 (game paths become text in every table), its bytes escaped.

    >>> _check_utf8(os.fsdecode(b"/data/trial_\\xff"))
    Traceback (most recent call last):
    ...
    pipeline.envs.alfworld.GameFileError: /data/trial_\\xff: folder name is not valid UTF-8; rename it
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise GameFileError(f"{shown}: folder name is not valid UTF-8; rename it") from None


def collect_games(config: AlfworldDataConfig) -> list[str]:
    """Sorted paths of the playable ``game.tw-pddl`` files of ``config.split``."""
    if not os.path.isdir(config.data_dir):
        raise GameFileError(f"{config.data_dir}: ALFWorld data directory not found; fetch ALFWorld's data with "
                            "`alfworld-download` (into $ALFWORLD_DATA, by default ~/.cache/alfworld)")
    if not os.path.isdir(config.split_dir):
        raise GameFileError(f"{config.split_dir}: missing split folder; expected the ALFWORLD_DATA layout "
                            f"{DATA_SUBDIR}/{{{','.join(SPLITS)}}}/<task>/<trial>/game.tw-pddl, as "
                            "`alfworld-download` writes it")
    _check_utf8(config.split_dir)
    games, errors = [], []
    for root, _, files in os.walk(config.split_dir):
        if "traj_data.json" not in files:
            continue
        try:
            _check_utf8(root)
            if _keep(root, config):
                games.append(os.path.join(root, "game.tw-pddl"))
        except GameFileError as exc:  # go on: one error names every bad game
            errors.append(str(exc))
    if len(errors) == 1:
        raise GameFileError(f"{config.split_dir}: 1 unusable game folder: {errors[0]}")
    if errors:
        raise GameFileError(f"{config.split_dir}: {len(errors)} unusable game folder(s):\n  "
                            + "\n  ".join(sorted(errors)))
    games.sort()
    if not games:
        raise GameFileError(f"{config.split_dir}: no solvable games of task types {list(config.task_types)}")
    return games[: config.max_games] if config.max_games else games
