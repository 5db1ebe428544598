"""Fork: start a run from round K of another run (its policy, and its optimizer state when kept).

With a ``fork`` section the source run's committed checkpoint of round K is
copied (hard-linked where the filesystem allows) into this run as round -1's
``checkpoint`` (policy version 0), with ``_fork.json`` naming the source, and
the source's DeepSpeed state of round K, when it kept one
(``trainer.optimizer_state: keep``), into round -1's ``trainer_state``: round 0
then collects with that policy and continues its AdamW moments (the ZeRO stage
and world size must match the source's). The copy makes the run stand alone:
the source may be cleaned up later. The KL reference is chosen apart
(``trainer.reference``). The state is copied first and the checkpoint
committed last, so a crash part-way is redone whole at the next start.
"""
from __future__ import annotations

import json
import os
import shutil

import storage
from pipeline.config import ConfigError, config_hash
from pipeline.records import CHECKPOINT_STAGE, FORK_FILE, STATE_STAGE, TRAIN_STEPS
from pipeline.run_config import ForkConfig
from pipeline.stages.retention import kept_checkpoints, retired
from storage.shards import build_folder

FORK_ROUND = -1  # the round the fork's copy lands in (a warm start's round)
LINK_BYTES = 1 << 12  # files from this size on are hard-linked rather than copied (DeepSpeed's `latest` is rewritten)


def source_round(fork: ForkConfig) -> tuple[storage.Run, int]:
    """The source run and round, checked: ``ConfigError`` naming ``fork.run`` / ``fork.round`` otherwise."""
    if not os.path.isdir(os.path.join(fork.run, "rounds")):
        raise ConfigError(f"fork.run: {fork.run}: no run directory (no rounds/ folder)")
    src = storage.open_run(fork.run)
    kept = kept_checkpoints(src)
    k = fork.round if fork.round is not None else (kept[-1] if kept else None)
    if k is None or k not in kept:
        why = "was removed by retention" if k is not None and retired(src, k) else "is not committed"
        raise ConfigError(f"fork.round: the checkpoint of round {k} of {fork.run} {why} (kept: {kept or 'none'})")
    return src, k


def fork_start(run: storage.Run, fork: ForkConfig) -> str:
    """Round -1's checkpoint, copied from the source once (later calls return it at once)."""
    if run.is_committed(FORK_ROUND, CHECKPOINT_STAGE):
        return run.stage_dir(FORK_ROUND, CHECKPOINT_STAGE)
    src, k = source_round(fork)
    source_dir = src.stage_dir(k, CHECKPOINT_STAGE)
    storage.verify_stage_dir(source_dir)
    state = src.stage_dir(k, STATE_STAGE)
    target = run.stage_dir(FORK_ROUND, STATE_STAGE)
    shutil.rmtree(target, ignore_errors=True)
    if os.path.isfile(os.path.join(state, "latest")):
        build_folder(target, lambda tmp: shutil.copytree(state, tmp, copy_function=_link_or_copy, dirs_exist_ok=True))
    run.begin(FORK_ROUND, CHECKPOINT_STAGE)
    out = run.stage_dir(FORK_ROUND, CHECKPOINT_STAGE)
    files = [f.path for f in src.manifest(k, CHECKPOINT_STAGE).files if f.path != TRAIN_STEPS]
    for rel in files:
        os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
        _link_or_copy(os.path.join(source_dir, rel), os.path.join(out, rel))
    with open(os.path.join(out, FORK_FILE), "w") as fh:
        json.dump({"run": os.path.abspath(fork.run), "round": k, "optimizer_state": os.path.isdir(target)}, fh)
    run.commit(FORK_ROUND, CHECKPOINT_STAGE, [run.describe(FORK_ROUND, CHECKPOINT_STAGE, f)
                                             for f in sorted(files + [FORK_FILE])], config_hash(fork), 0)
    print(f"fork: round {k} of {fork.run} copied as this run's starting policy"
          + (" with its optimizer state" if os.path.isdir(target) else " (no optimizer state kept there)"),
          flush=True)
    return out


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a large file (weights and optimizer shards are never rewritten in place), else copy it."""
    try:
        if os.path.getsize(src) < LINK_BYTES:
            raise OSError("small: copied")
        os.link(src, dst)
    except OSError:  # small, or another filesystem
        shutil.copy2(src, dst)
    return dst
