"""Train on a run directory's committed round and commit the result as its ``checkpoint`` stage.

PPO reads ``run.scan("advantages", rounds=[r])``, SFT (``loss: sft``) the round's
``steps`` (only the token columns are loaded), trains, exports the HF checkpoint
into ``run.stage_dir(r, "checkpoint")`` and commits it (rank 0, after every rank is
done). A committed checkpoint stage makes the call a no-op. DeepSpeed state for
resume lives in the uncommitted ``trainer_state`` stage directory. With
``optimizer_state: keep`` the round's final state stays there and round r+1 starts
from round r's (its AdamW moments); older rounds' states are removed only once
round r's checkpoint is committed, so a crash never loses the state a rerun needs.
With ``reset`` the state is removed once the checkpoint is exported.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import polars as pl

from pipeline.config import config_hash
from storage.stage_names import ADVANTAGES_STAGE, CHECKPOINT_STAGE, STATE_STAGE, TRAIN_STEPS, TRAJECTORIES_STAGE
from trainer.config import TrainerConfig
from trainer.resident import Resident
from trainer.updates import TrainResult, train_round

SOURCE_STAGE = {"ppo": ADVANTAGES_STAGE, "sft": TRAJECTORIES_STAGE}  # the stage each loss trains on


def train_from_run(run, round: int, cfg: TrainerConfig, policy_path: str | Path, *,
                   ref_path: str | Path | None = None, local_dir: str | Path | None = None,
                   on_step=None, on_note=None, progress: bool = True,
                   resident: Resident | None = None) -> TrainResult | None:
    """Train on round ``round`` of ``run`` (a ``storage.Run``); returns None when already committed.

    Local runs write straight into the stage directories; for object-store runs the
    checkpoint and state are written under ``local_dir`` (default: a temp dir, removed
    when the call ends) and the checkpoint is uploaded before the commit. A resident rank passes what it keeps
    between rounds (``resident``, see ``trainer.resident``).

    Example (a run whose round 0 has a committed advantages stage)::

        train_from_run(storage.open_run("runs/x"), 0, TrainerConfig(), "ckpt/base", ref_path="ckpt/base")
    """
    import storage
    import torch.distributed as dist
    from storage.uri import is_local

    from trainer.deepspeed_engine import init_distributed

    if run.is_committed(round, CHECKPOINT_STAGE):
        return None
    source = SOURCE_STAGE[cfg.loss]
    if not run.is_committed(round, source):
        raise storage.StageNotCommitted(
            f"{run.stage_dir(round, source)}: round {round} has no committed {source!r} stage; "
            + ("run the advantage job before training" if cfg.loss == "ppo" else "collect it before training"))
    rank, _ = init_distributed(on_note=on_note)
    local = is_local(run.fs)
    with _staging(local_dir, local) as base:
        out_dir = run.stage_dir(round, CHECKPOINT_STAGE) if local else base / CHECKPOINT_STAGE
        state_dir = run.stage_dir(round, STATE_STAGE) if local else base / STATE_STAGE
        if rank == 0 and local:
            run.begin(round, CHECKPOINT_STAGE)  # drop a crashed attempt's partial export
        if dist.is_initialized():
            dist.barrier()
        rows = (run.scan("advantages", rounds=[round]) if cfg.loss == "ppo"  # load_rows reads only its COLUMNS
                else run.scan("steps", rounds=[round]).with_columns(advantage=pl.lit(0.0)))
        keep = cfg.optimizer_state == "keep" and local
        previous = run.stage_dir(round - 1, STATE_STAGE) if keep else None
        result = train_round(cfg, policy_path, rows, out_dir, ref_path=ref_path, state_dir=state_dir,
                             optimizer_from=previous, on_step=on_step, on_note=on_note, progress=progress,
                             resident=resident)
        if rank == 0:
            if keep and not result.continued and not result.resumed_from:
                print(f"trainer: round {round}: AdamW starts fresh (no optimizer state of round {round - 1} in "
                      f"{previous})", file=sys.stderr, flush=True)
            with open(Path(out_dir) / TRAIN_STEPS, "w") as fh:
                fh.writelines(json.dumps({"step": result.resumed_from + i + 1} | m) + "\n"
                              for i, m in enumerate(result.metrics))
            _commit(run, round, Path(out_dir), local, cfg)
            if local and not cfg.keep_state:
                _drop_older_states(run, round)
        if dist.is_initialized():
            dist.barrier()
        if resident is not None:
            resident.committed(run.manifest(round, CHECKPOINT_STAGE))
        return result


@contextlib.contextmanager
def _staging(local_dir: str | Path | None, local: bool) -> Iterator[Path | None]:
    """Where an object-store run's checkpoint and state are written: ``local_dir``, else a temp dir removed at
    exit; None for a local run (it writes into its stage directories)."""
    if local_dir or local:
        yield Path(local_dir) if local_dir else None
        return
    with tempfile.TemporaryDirectory(prefix="gigpo-trainer-") as tmp:
        yield Path(tmp)


def _drop_older_states(run, round: int) -> None:
    """Remove the trainer state of every round before ``round`` (its checkpoint is committed)."""
    for folder in Path(run.root, "rounds").glob(f"*/{STATE_STAGE}"):
        if int(folder.parent.name) < round:
            shutil.rmtree(folder, ignore_errors=True)


def _commit(run, round: int, out_dir: Path, local: bool, cfg: TrainerConfig) -> None:
    if not local:
        import pyarrow.fs as pafs

        pafs.copy_files(str(out_dir), run.stage_dir(round, CHECKPOINT_STAGE),
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=run.fs)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    run.commit(round, CHECKPOINT_STAGE, [run.describe(round, CHECKPOINT_STAGE, f) for f in files],
               config_hash=config_hash(cfg), policy_version=round + 1)  # round -1's SFT: 0
