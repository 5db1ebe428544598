"""Round setup: the games, the base model, each round's tasks and policy.

Everything here is deterministic and idempotent, so a rerun after a crash
finds the same games, the same base model and the same task list.
"""
from __future__ import annotations

import os
import random

import storage
from pipeline.config import ConfigError, to_dict
from pipeline.envs.alfworld import GameFileError
from pipeline.envs.alfworld_gen import generate_games
from pipeline.envs.data import AlfworldDataConfig, collect_games
from pipeline.models import hub
from pipeline.models.hub import HubModelError, is_hub_id
from pipeline.policy.base import CheckpointError, check_checkpoint
from pipeline.records import CHECKPOINT_STAGE
from pipeline.rollout.task import DAEMON_ERROR, is_daemon
from pipeline.run_config import GamesConfig, RunConfig
from pipeline.runtime.keys import key_prefix
from pipeline.runtime.workers import check_batches, resolve_ranks
from storage.shards import build_folder


def local_dir(run: storage.Run, name: str) -> str:
    """A folder of the run on this machine's disk (games and the base model are files that processes open)."""
    if not storage.uri.is_local(run.fs):
        raise ValueError(f"{run.uri}: games and checkpoints need a local or shared filesystem path "
                         "(e.g. NFS/Lustre on a Slurm cluster), not an object store")
    return os.path.join(run.root, name)


def prepare_games(cfg: GamesConfig, run: storage.Run, client=None) -> tuple[list[str], list[str]]:
    """(train games, held-out games): from ``cfg.data_dir`` or generated into ``RUN/games`` (on ``client``'s
    workers)."""
    root = cfg.data_dir
    if root is None:
        root = local_dir(run, "games")
        common = dict(max_receptacles=cfg.max_receptacles, task_types=tuple(cfg.task_types), client=client,
                      key=key_prefix("games", run.id))
        generate_games(root, cfg.generate_train, cfg.seed, split=cfg.train_split, **common)
        if cfg.generate_eval:
            generate_games(root, cfg.generate_eval, cfg.seed + 1, split=cfg.eval_split, **common)
    train = collect_games(AlfworldDataConfig(data_dir=root, split=cfg.train_split))
    held_out = collect_games(AlfworldDataConfig(data_dir=root, split=cfg.eval_split)) \
        if cfg.data_dir or cfg.generate_eval else []
    return train, held_out


def check_paths(cfg: RunConfig) -> None:
    """Refuse, before any work, a ``run_dir`` on an object store, a ``base_model`` that is no checkpoint, a
    ``fork`` without its source round or a ``games.data_dir`` with unusable games.

    Raises ``ConfigError`` naming the key (every bad game of a split at once).

    >>> check_paths(RunConfig(base_model="/nonexistent/model"))
    Traceback (most recent call last):
    ...
    pipeline.config.ConfigError: base_model: /nonexistent/model: policy checkpoint directory not found
    """
    if storage.uri.scheme(cfg.run_dir) != "file":
        raise ConfigError(f"run_dir: {cfg.run_dir} is not a filesystem path; the games, checkpoints, the trainer's "
                          "model files and the trackers need one that the driver and every worker share: use a "
                          "local or shared POSIX path (NFS/Lustre)")
    if cfg.base_model != "tiny":
        try:
            check_checkpoint(_hub_model(cfg).path if is_hub_id(cfg.base_model) else cfg.base_model)
        except (CheckpointError, HubModelError) as exc:
            raise ConfigError(f"base_model: {exc}") from exc
    if cfg.fork is not None:
        from pipeline.stages.fork import source_round

        if os.path.abspath(cfg.fork.run) == os.path.abspath(cfg.run_dir):
            raise ConfigError(f"fork.run: {cfg.fork.run} is this run's own directory (run_dir); fork into a new one")
        source_round(cfg.fork)
    if cfg.games.data_dir is not None:
        for split in dict.fromkeys((cfg.games.train_split, cfg.games.eval_split)):
            try:
                collect_games(AlfworldDataConfig(data_dir=cfg.games.data_dir, split=split))
            except GameFileError as exc:
                raise ConfigError(f"games.data_dir: {exc}") from exc


def check_cluster(client, cfg: RunConfig) -> int:
    """The train ranks the cluster gives ``cfg``; ``ConfigError`` when its workers are daemonic (they could not
    start env, engine or trainer processes), or naming keys and working values when its mini-batches (the
    trainer's, the warm start's) cannot be shared by that many ranks."""
    if any(client.run(is_daemon).values()):
        raise ConfigError(DAEMON_ERROR)
    c = cfg.cluster
    ranks = resolve_ranks(client, c.train_ranks, c.train_resources)
    how = f" (cluster.train_ranks=auto: {ranks} worker(s) offer {c.train_resources})" \
        if c.train_ranks == "auto" and c.train_resources else ""
    sections = {"trainer": (cfg.trainer.mini_batch_size, cfg.trainer.micro_batch_size)}
    if cfg.warm_start is not None and cfg.warm_start.enabled:
        sections["warm_start"] = (cfg.warm_start.mini_batch_size, cfg.warm_start.micro_batch_size)
    check_batches(sections, ranks, how)
    return ranks


def base_model(cfg: RunConfig, run: storage.Run) -> str:
    """Round 0's policy: ``cfg.base_model`` (a hub id: its pinned snapshot), or the tiny model built into
    ``RUN/base_model``."""
    if is_hub_id(cfg.base_model):
        model = _hub_model(cfg)
        hub.record(model, run.root)
        return model.path
    if cfg.base_model != "tiny":
        return cfg.base_model
    from pipeline.models.tiny_model import make_tiny_model

    path = local_dir(run, "base_model")
    try:
        check_checkpoint(path)
    except CheckpointError:  # absent, or left incomplete by a crash of an older version: (re)build it
        build_folder(path, lambda tmp: make_tiny_model(tmp, seed=cfg.games.seed, **to_dict(cfg.tiny_model)))
    return path


def _hub_model(cfg: RunConfig) -> hub.HubModel:
    return hub.pinned(cfg.base_model, cfg.base_model_revision, os.path.abspath(cfg.run_dir))


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


def reference_policy(choice: str, base: str, start: str) -> str | None:
    """The KL reference of ``trainer.reference``: the starting policy, the base model, or none.

    >>> reference_policy("start", "/m/base", "/run/rounds/-00001/checkpoint"), reference_policy("none", "b", "s")
    ('/run/rounds/-00001/checkpoint', None)
    """
    return {"start": start, "base": base, "none": None}[choice]


def policy_for(run: storage.Run, round: int, base: str) -> str:
    """Round ``round`` collects with round ``round - 1``'s committed checkpoint (round 0: ``base``, the
    starting policy: the warm start's checkpoint or the base model)."""
    if round == 0:
        return base
    if not run.is_committed(round - 1, CHECKPOINT_STAGE):
        raise storage.StageNotCommitted(f"{run.stage_dir(round - 1, CHECKPOINT_STAGE)}: round {round - 1} has no "
                                        f"committed checkpoint to collect round {round} with")
    return run.stage_dir(round - 1, CHECKPOINT_STAGE)
