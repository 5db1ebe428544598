"""Offline ALFWorld games: households of ALFRED classes written as real ``game.tw-pddl`` files.

Each game gets ALFWorld's folder layout, a ``traj_data.json`` (so the experts
work), ``initial_state.pddl`` and a ``game.tw-pddl`` whose grammar carries the
templated task sentence. Every game is solved by the planner expert on the real
engine before it is written; its plan is stored as the ``walkthrough``.
Deterministic for a seed: game ``i`` depends on ``(seed, i)`` only; games
already on disk are kept, so a rerun with the same settings costs little.

Command line::

    python -m pipeline.envs.alfworld_gen OUT_DIR --games 60 --seed 0 [--split train]

>>> import tempfile
>>> paths = generate_games(tempfile.mkdtemp(), games=1, seed=0)
>>> paths[0].endswith("game.tw-pddl")
True
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import uuid
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs
from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

from pipeline.envs.alfworld import AlfworldEnv, AlfworldEnvConfig, GameFileError
from pipeline.envs.data import DATA_SUBDIR, SPLITS
from pipeline.envs.households import ROOM_SCENE_BASE, sample_household
from pipeline.envs.pddl import problem_text
from pipeline.envs.tasks import TASK_TYPES, TaskSpec, check_task_types, sample_task
from pipeline.validators import at_least, choice
from storage.shards import put_atomic

GENERATOR_VERSION = 1
_MAX_TRIES = 20


@dataclass(frozen=True)
class GenConfig:
    """What households and tasks to generate."""

    games: int = 12  # number of games; game i has task type task_types[i % len(task_types)]
    seed: int = 0  # generation seed; the same seed gives byte-identical games
    split: str = "train"  # split folder the games are written to
    task_types: tuple[str, ...] = TASK_TYPES  # task types to cycle through
    min_receptacles: int = 3  # fewest receptacles in a household (the task's own needs may add more)
    max_receptacles: int = 25  # most receptacles in a household
    max_distractors: int = 3  # most extra objects per receptacle

    def __post_init__(self) -> None:
        at_least(self, "games", 1)
        choice(self, "split", SPLITS)
        check_task_types(self.task_types, "GenConfig.task_types")
        if not 3 <= self.min_receptacles <= self.max_receptacles <= 25:
            raise ValueError("GenConfig needs 3 <= min_receptacles <= max_receptacles <= 25, got "
                             f"{self.min_receptacles} and {self.max_receptacles}")
        at_least(self, "max_distractors", 0)


@dataclass(frozen=True)
class GeneratedGame:
    """One sampled game, before the planner checks it."""

    spec: TaskSpec
    scene: int  # ALFRED-style scene number (room base + 1..30), used in the folder name
    sentence: str  # templated task sentence
    problem: str  # PDDL problem text

    @property
    def folder(self) -> str:
        """ALFRED task folder name, e.g. ``pick_and_place_simple-Apple-None-CounterTop-12``."""
        s = self.spec
        return f"{s.task_type}-{s.object_target}-None-{s.parent_target or s.toggle_target}-{self.scene}"


def _game_data(problem: str, sentence: str, walkthrough: list[str] | None) -> dict:
    with open(ALFRED_PDDL_PATH) as f, open(ALFRED_TWL2_PATH) as g:
        domain, grammar = f.read(), g.read()
    return {"pddl_domain": domain, "grammar": grammar.replace("UNKNOWN GOAL", sentence),
            "pddl_problem": problem, "solvable": None if walkthrough is None else True, "walkthrough": walkthrough}


def _traj_data(game: GeneratedGame, name: str, config: GenConfig) -> dict:
    return {"task_type": game.spec.task_type, "task_id": name, "pddl_params": game.spec.pddl_params(),
            "scene": {"scene_num": game.scene, "room": game.spec.room},
            "turk_annotations": {"anns": [{"task_desc": game.sentence, "high_descs": [], "votes": []}]},
            "generator": {"name": "pipeline.envs.alfworld_gen", "version": GENERATOR_VERSION,
                          **{k: v for k, v in asdict(config).items() if k != "games"}}}


class Solver:
    """The planner expert for the plan, a plain env to check it wins (the planner replans every step)."""

    def __init__(self) -> None:
        self.planner = AlfworldEnv(AlfworldEnvConfig(expert="planner", max_steps=10_000))
        self.player = AlfworldEnv(AlfworldEnvConfig(max_steps=10_000))

    def __call__(self, trial_dir: str, game: dict, traj: dict) -> list[str] | None:
        """Write the game, play the planner's plan on the real engine; the plan if it wins."""
        os.makedirs(trial_dir, exist_ok=True)
        _write_json(os.path.join(trial_dir, "traj_data.json"), traj)
        path = os.path.join(trial_dir, "game.tw-pddl")
        _write_json(path, game)
        plan = list(self.planner.reset(path).expert_plan or [])
        self.player.reset(path)
        won = False
        for action in plan:
            won = self.player.step(action).won
        return plan if won else None


def _write_json(path: str, data: dict) -> None:
    put_atomic(pafs.LocalFileSystem(), path, json.dumps(data).encode())


def write_game_index(out_dir: str, index: int, config: GenConfig, solve: Solver) -> str:
    """Generate, solve and write game ``index``; the path of its ``game.tw-pddl``."""
    rng = random.Random(f"alfworld-gen:{config.seed}:{index}")
    task_type = config.task_types[index % len(config.task_types)]
    name = f"trial_G{config.seed}_{index:06d}"
    for _ in range(_MAX_TRIES):
        spec = sample_task(rng, task_type)
        n = max(rng.randint(config.min_receptacles, config.max_receptacles), len(spec.required))
        lamp = (spec.toggle_target, spec.lamp_host) if spec.toggle_target else None
        forbid = (spec.object_target, spec.parent_target) if spec.parent_target else None
        house = sample_household(rng, spec.room, list(spec.required), n, [(spec.object_target, spec.source)]
                                 * spec.n_objects, config.max_distractors, forbid=forbid, lamp=lamp)
        sentence = spec.sentence(rng.randrange(2))
        problem = problem_text(house, f"plan_{name}", task_type, spec.object_target, spec.parent_target,
                               spec.toggle_target)
        game = GeneratedGame(spec, ROOM_SCENE_BASE[spec.room] + rng.randint(1, 30), sentence, problem)
        trial_dir = os.path.join(out_dir, DATA_SUBDIR, config.split, game.folder, name)
        if _already_written(trial_dir, problem):
            return os.path.join(trial_dir, "game.tw-pddl")
        plan = solve(trial_dir, _game_data(problem, sentence, None), _traj_data(game, name, config))
        if plan:
            with open(os.path.join(trial_dir, "initial_state.pddl"), "w") as f:
                f.write(problem)
            _write_json(os.path.join(trial_dir, "game.tw-pddl"), _game_data(problem, sentence, plan))
            return os.path.join(trial_dir, "game.tw-pddl")
        _remove_trial(trial_dir)
    raise GameFileError(f"{out_dir}: no solvable {task_type} game after {_MAX_TRIES} tries (index {index})")


def _already_written(trial_dir: str, problem: str) -> bool:
    """The same solved game is on disk already (a rerun with the same config is cheap)."""
    try:
        with open(os.path.join(trial_dir, "game.tw-pddl")) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("pddl_problem") == problem and data.get("solvable") is True and bool(data.get("walkthrough"))


def _remove_trial(trial_dir: str) -> None:
    for f in os.listdir(trial_dir):
        os.remove(os.path.join(trial_dir, f))
    os.rmdir(trial_dir)


_SOLVERS = threading.local()  # one Solver per worker thread of a Dask cluster (its engines are not thread-safe)


def _write_on_worker(out_dir: str, index: int, config: GenConfig) -> str:
    if not hasattr(_SOLVERS, "solve"):
        _SOLVERS.solve = Solver()
    return write_game_index(out_dir, index, config, _SOLVERS.solve)


def generate_games(out_dir: str, games: int = 12, seed: int = 0, *, client=None, key: str | None = None,
                   **options) -> list[str]:
    """Write ``games`` solved games under ``out_dir`` (an ALFWORLD_DATA root); their paths.

    ``options`` are further ``GenConfig`` fields (split, task_types, min/max_receptacles, ...).
    With a Dask ``client`` the games are solved on its workers (``out_dir`` must be on a filesystem
    they share); the games are the same either way, as game ``i`` depends on ``(seed, i)`` only.
    ``key`` starts the tasks' Dask keys (``pipeline.runtime.keys``; default: fresh ones).
    """
    config = GenConfig(games=games, seed=seed, **options)
    if client is not None:
        key = key or f"alfworld-gen-{uuid.uuid4().hex[:8]}"
        keys = [f"{key}-{config.split}-{i}" for i in range(config.games)]
        futures = client.map(_write_on_worker, [out_dir] * config.games, range(config.games), config=config, key=keys)
        return client.gather(futures)
    solve = Solver()
    return [write_game_index(out_dir, i, config, solve) for i in range(config.games)]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m pipeline.envs.alfworld_gen", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", help="ALFWORLD_DATA root to write json_2.1.1/<split>/... into")
    p.add_argument("--games", type=int, default=12, help="number of games (default 12)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--task-types", nargs="+", default=list(TASK_TYPES), metavar="TYPE")
    p.add_argument("--receptacles", type=int, nargs=2, default=(3, 25), metavar=("MIN", "MAX"))
    p.add_argument("--max-distractors", type=int, default=3)
    args = p.parse_args(argv)
    from tqdm import tqdm

    config = GenConfig(games=args.games, seed=args.seed, split=args.split, task_types=tuple(args.task_types),
                       min_receptacles=args.receptacles[0], max_receptacles=args.receptacles[1],
                       max_distractors=args.max_distractors)
    solve = Solver()
    for i in tqdm(range(config.games), desc="games", unit="game"):
        write_game_index(args.out_dir, i, config, solve)
    print(f"wrote {config.games} games to {os.path.join(args.out_dir, DATA_SUBDIR, config.split)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
