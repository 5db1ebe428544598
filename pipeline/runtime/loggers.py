"""Experiment trackers fed from each round's committed metrics, on one global step axis.

TensorBoard (``logging.tensorboard: true``) writes ``RUN/tensorboard``; it needs
the ``tensorboard`` package (the ``test`` and ``train`` extras have it).
Weights & Biases (``logging.wandb: {project: ..., mode: offline}``) writes one
W&B run per GiGPO run (``RUN/wandb``); it needs the ``wandb`` extra.

After a round's metrics stage is committed, each tracker gets the round's
per-step trainer metrics (``train/<name>``; the warm start's as ``sft/<name>``)
at their global steps (every optimizer step of the run counted once, see
``pipeline.records.step_axis``), then the round's figures (``loss``,
``eval_success_rate``, ``stage_seconds/<stage>``, ``round``, ...) at the
round's last step. ``_logged_rounds.json`` in a tracker's folder records the
rounds it has (written after its flush), so a driver start logs the rounds a
crash left unlogged; a crash between the flush and the record logs a round
once more at most (with the same values).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict

import storage
from pipeline.records import RoundMetrics, read_metrics, read_train_steps, step_axis
from pipeline.runtime.trackers import LoggingConfig, TensorBoard, Wandb
from storage.shards import put_atomic

LOGGED = "_logged_rounds.json"


def scalars(metrics: RoundMetrics) -> dict[str, float]:
    """Flat ``name -> value`` of a round's numeric metrics (stage times as ``stage_seconds/<stage>``).

    >>> scalars(RoundMetrics(round=3, policy_version=3, loss=0.5, stage_seconds={"train": 2.0}))["stage_seconds/train"]
    2.0
    """
    out = {k: float(v) for k, v in asdict(metrics).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "policy_version"}
    out.update({f"stage_seconds/{k}": float(v) for k, v in metrics.stage_seconds.items()})
    return out


def step_scalars(round: int, step: dict) -> dict[str, float]:
    """One trainer step's numeric metrics, named ``train/<name>`` (round -1, the warm start: ``sft/<name>``).

    >>> step_scalars(-1, {"loss": 0.5, "note": "x"})
    {'sft/loss': 0.5}
    """
    prefix = "sft" if round < 0 else "train"
    return {f"{prefix}/{k}": float(v) for k, v in step.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Trackers:
    """The run's trackers for one driver: ``with Trackers(cfg.logging, run) as t: ... t.catch_up()``.

    Each writer opens on first use, so a run with nothing new to log gets no new file.
    """

    def __init__(self, cfg: LoggingConfig, run: storage.Run, config: dict | None = None):
        self.cfg, self.run, self.config, self.open = cfg, run, config or {}, {}

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def folders(self) -> dict[str, str]:
        """Each enabled tracker's folder in the run."""
        names = ["tensorboard"] * self.cfg.tensorboard + ["wandb"] * (self.cfg.wandb is not None)
        return {name: os.path.join(self.run.root, name) for name in names}

    def catch_up(self) -> list[int]:
        """Log every committed round a tracker lacks; return those rounds."""
        folders = self.folders()
        if not folders:
            return []
        records = read_metrics(self.run)
        axis, logged = step_axis(self.run, records), set()
        for name, folder in folders.items():
            done = logged_rounds(folder)
            todo = [m for m in records if m.round not in done]
            if todo:
                self._write(name, todo, axis)
                rounds = sorted(done | {m.round for m in todo})
                put_atomic(self.run.fs, f"{folder}/{LOGGED}", json.dumps(rounds).encode())
                logged |= {m.round for m in todo}
        return sorted(logged)

    def _write(self, name: str, todo: list[RoundMetrics], axis: dict[int, tuple[int, int]]) -> None:
        writer = self._writer(name)
        for m in todo:
            start, steps = axis[m.round]
            for i, step in enumerate(read_train_steps(self.run, m.round)):
                writer.write(start + i + 1, step_scalars(m.round, step))
            writer.write(start + steps, scalars(m))
        writer.flush()

    def _writer(self, name: str):
        if name not in self.open:
            folder = self.folders()[name]
            self.open[name] = TensorBoard(folder) if name == "tensorboard" else \
                Wandb(self.cfg.wandb, folder, self.run.root, self.config)
        return self.open[name]

    def close(self) -> None:
        for writer in self.open.values():
            writer.close()
        self.open = {}


def logged_rounds(folder: str) -> set[int]:
    """Rounds whose tracker events in ``folder`` are flushed (per its record)."""
    try:
        with open(os.path.join(folder, LOGGED)) as fh:
            return set(json.load(fh))
    except FileNotFoundError:
        return set()
