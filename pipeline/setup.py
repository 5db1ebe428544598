"""Round setup: the games, the base model, each round's tasks and policy.

Everything here is deterministic and idempotent, so a rerun after a crash
finds the same games, the same base model and the same task list.
"""
from __future__ import annotations

import os
import random

import storage
from pipeline.config import to_dict
from pipeline.envs.alfworld_gen import generate_games
from pipeline.envs.data import AlfworldDataConfig, collect_games
from pipeline.run_config import GamesConfig, RunConfig

CHECKPOINT = "checkpoint"


def local_dir(run: storage.Run, name: str) -> str:
    """A folder of the run on this machine's disk (games and the base model are files that processes open)."""
    if not storage.uri.is_local(run.fs):
        raise ValueError(f"{run.uri}: games and checkpoints need a local or shared filesystem path "
                         "(e.g. NFS/Lustre on a Slurm cluster), not an object store")
    return os.path.join(run.root, name)


def prepare_games(cfg: GamesConfig, run: storage.Run) -> tuple[list[str], list[str]]:
    """(train games, held-out games): from ``cfg.data_dir`` or generated into ``RUN/games``."""
    root = cfg.data_dir
    if root is None:
        root = local_dir(run, "games")
        common = dict(max_receptacles=cfg.max_receptacles, task_types=tuple(cfg.task_types))
        generate_games(root, cfg.generate_train, cfg.seed, split=cfg.train_split, **common)
        if cfg.generate_eval:
            generate_games(root, cfg.generate_eval, cfg.seed + 1, split=cfg.eval_split, **common)
    train = collect_games(AlfworldDataConfig(data_dir=root, split=cfg.train_split))
    held_out = collect_games(AlfworldDataConfig(data_dir=root, split=cfg.eval_split)) \
        if cfg.data_dir or cfg.generate_eval else []
    return train, held_out


def base_model(cfg: RunConfig, run: storage.Run) -> str:
    """Round 0's policy: ``cfg.base_model``, or the tiny model built into ``RUN/base_model``."""
    if cfg.base_model != "tiny":
        return cfg.base_model
    from pipeline.tiny_model import make_tiny_model

    path = local_dir(run, "base_model")
    if not os.path.exists(os.path.join(path, "config.json")):
        make_tiny_model(path, seed=cfg.games.seed, **to_dict(cfg.tiny_model))
    return path


def round_tasks(games: list[str], round: int, count: int, seed: int) -> list[str]:
    """The ``count`` games of a round: a seeded draw, without repeats while the list lasts.

    >>> round_tasks(["a", "b", "c"], 0, 2, seed=0) == round_tasks(["a", "b", "c"], 0, 2, seed=0)
    True
    """
    if not games:
        raise ValueError("no games to draw round tasks from")
    rng = random.Random(f"round-tasks:{seed}:{round}")
    picks: list[str] = []
    while len(picks) < count:
        picks += rng.sample(games, min(len(games), count - len(picks)))
    return picks


def policy_for(run: storage.Run, round: int, base: str) -> str:
    """Round ``round`` collects with round ``round - 1``'s committed checkpoint (round 0: ``base``, the
    starting policy: the warm start's checkpoint or the base model)."""
    if round == 0:
        return base
    if not run.is_committed(round - 1, CHECKPOINT):
        raise storage.StageNotCommitted(f"{run.stage_dir(round - 1, CHECKPOINT)}: round {round - 1} has no "
                                        f"committed checkpoint to collect round {round} with")
    return run.stage_dir(round - 1, CHECKPOINT)
