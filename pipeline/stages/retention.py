"""Checkpoint retention: ``trainer.keep_checkpoints: N`` and ``keep_every: M``.

After round r's metrics are committed, the checkpoints of rounds 0..r but the
newest N, and but those whose policy version (round + 1) is a multiple of M,
are retired: their weights, config and tokenizer files are removed, with any
DeepSpeed state kept for them; the stage keeps ``train_metrics.jsonl`` (the
per-step metrics). Round -1 (warm start or fork: the starting policy and KL
reference) is never removed, nor are trajectories, advantages, evaluations or
metrics. Removal goes through ``storage.Run.retire``: the manifest records the
retired files before they are deleted, so ``storage verify`` reports no loss
and a crash part-way is finished by the next pass.

>>> to_retire([-1, 0, 1, 2, 3, 4], keep=2, every=2)
[0, 2]
"""
from __future__ import annotations

import shutil

import storage
from pipeline.records import CHECKPOINT_STAGE, STATE_STAGE, TRAIN_STEPS
from trainer.config import TrainerConfig

NOTE = "retention (trainer.keep_checkpoints / keep_every)"


def to_retire(rounds: list[int], keep: int, every: int) -> list[int]:
    """Rounds (of those with a committed checkpoint, ascending) whose checkpoint retention removes."""
    if keep < 1:
        return []
    old = [r for r in rounds if r >= 0][:-keep]
    return [r for r in old if not (every and (r + 1) % every == 0)]


def retired(run: storage.Run, round: int) -> bool:
    """Whether retention removed round ``round``'s checkpoint."""
    m = run.manifest(round, CHECKPOINT_STAGE)
    return m is not None and bool(m.retired)


def kept_checkpoints(run: storage.Run) -> list[int]:
    """Rounds whose committed checkpoint is still there (not retired), ascending."""
    return [r for r in run.rounds() if run.is_committed(r, CHECKPOINT_STAGE) and not retired(run, r)]


def prune(run: storage.Run, cfg: TrainerConfig) -> list[int]:
    """Retire the checkpoints retention no longer keeps; the rounds retired by this call."""
    rounds = [r for r in run.rounds() if run.is_committed(r, CHECKPOINT_STAGE)]
    done = []
    for r in to_retire(rounds, cfg.keep_checkpoints, cfg.keep_every):
        was = retired(run, r)
        run.retire(r, CHECKPOINT_STAGE, keep={TRAIN_STEPS}, note=NOTE)
        shutil.rmtree(run.stage_dir(r, STATE_STAGE), ignore_errors=True)
        if not was:
            done.append(r)
    if done:
        print(f"retention: removed the checkpoint(s) of round(s) {done} (trainer.keep_checkpoints="
              f"{cfg.keep_checkpoints}, keep_every={cfg.keep_every})", flush=True)
    return done
