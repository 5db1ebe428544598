"""Experiment trackers fed live from the trainer's steps and from each round's committed metrics.

TensorBoard (``logging.tensorboard: true``) writes ``RUN/tensorboard``; it needs
the ``tensorboard`` package (the ``test`` and ``train`` extras have it).
Weights & Biases (``logging.wandb: {project: ..., mode: offline}``) writes one
W&B run per GiGPO run (``RUN/wandb``); it needs the ``wandb`` extra.

Three step axes (``pipeline.runtime.trackers.AXES``): the warm start's SFT steps
carry ``sft/<name>`` at their SFT optimizer step, the RL steps ``train/<name>`` at
their RL optimizer step (``pipeline.records.axis_start``: counted from round 0,
whatever the warm start took), and each round's figures (``success_rate``,
``eval_success_rate``, ``stage_seconds/<stage>``, ``round``, ...) sit at the
round. Step figures arrive as the steps end (``step``, from the driver's live
step records), round figures once the round's metrics are committed
(``catch_up``, which also logs committed step figures a tracker lacks). Figures
that are structurally zero for the loss are left out (``ZERO_FOR_SFT``;
``kl_loss`` with ``trainer.kl_coef: 0``).

``_logged.json`` in a tracker's folder records the last step it holds on each
axis (written after its flush), so a later driver logs only what comes after:
no point twice. TensorBoard also purges what a crash left flushed but
unrecorded (``TensorBoard``); in W&B such points, at most one round's, stay.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import asdict

import storage
from pipeline.records import RoundMetrics, axis_start, read_metrics, read_train_steps, step_axis, step_numbers
from pipeline.runtime.trackers import BEFORE, LoggingConfig, TensorBoard, Wandb
from storage.shards import put_atomic

LOGGED = "_logged.json"
RUN_ID = "_run_id"  # in RUN/wandb: the W&B run id, made at the first start
META = {"step", "total", "round", "tag", "global_step"}  # what a live step record carries besides figures
# Zero by construction in every SFT step: no ratio to clip, no sampling policy or reference to differ from.
ZERO_FOR_SFT = {"pg_loss", "kl_loss", "clip_frac", "clip_frac_lower", "approx_kl"}
ZERO_FOR_SFT_ROUND = {"kl", "clip_fraction"}  # their round means


def scalars(metrics: RoundMetrics) -> dict[str, float]:
    """Flat ``name -> value`` of a round's numeric metrics (stage times as ``stage_seconds/<stage>``), but those
    zero for its loss (round -1 trains SFT).

    >>> s = scalars(RoundMetrics(round=-1, policy_version=-1, kl=0.0, loss=0.5, stage_seconds={"warm_start": 2.0}))
    >>> s["stage_seconds/warm_start"], s["loss"], "kl" in s
    (2.0, 0.5, False)
    """
    drop = {"policy_version"} | (ZERO_FOR_SFT_ROUND if metrics.round < 0 else set())
    out = {k: float(v) for k, v in asdict(metrics).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in drop}
    out.update({f"stage_seconds/{k}": float(v) for k, v in metrics.stage_seconds.items()})
    return out


def step_scalars(round: int, step: dict, kl_coef: float | None = None) -> dict[str, float]:
    """One trainer step's numeric figures, named ``train/<name>`` (round -1, the warm start: ``sft/<name>``), but
    those zero for its loss.

    >>> step_scalars(-1, {"loss": 0.5, "clip_frac": 0.0, "step": 3, "note": "x"})
    {'sft/loss': 0.5}
    >>> step_scalars(0, {"loss": 0.5, "kl_loss": 0.0}, kl_coef=0.0)
    {'train/loss': 0.5}
    """
    drop = META | (ZERO_FOR_SFT if round < 0 else {"kl_loss"} if kl_coef == 0 else set())
    prefix = "sft" if round < 0 else "train"
    return {f"{prefix}/{k}": float(v) for k, v in step.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in drop}


def axis_of(round: int) -> str:
    """The step axis of round ``round``'s trainer steps."""
    return "sft" if round < 0 else "train"


class Trackers:
    """The run's trackers for one driver: ``with Trackers(cfg.logging, run, config) as t: ... t.catch_up()``.

    ``step`` and ``catch_up`` may run on different threads (the live records arrive on the Dask client's).
    Each writer opens on first use, so a run with nothing new to log gets no new file.
    """

    def __init__(self, cfg: LoggingConfig, run: storage.Run, config: dict | None = None):
        self.cfg, self.run, self.config, self.open, self.done = cfg, run, config or {}, {}, {}
        self.kl_coef = self.config.get("trainer", {}).get("kl_coef")
        self.lock, self.unsaved = threading.Lock(), set()

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def folders(self) -> dict[str, str]:
        """Each enabled tracker's folder in the run."""
        names = ["tensorboard"] * self.cfg.tensorboard + ["wandb"] * (self.cfg.wandb is not None)
        return {name: os.path.join(self.run.root, name) for name in names}

    def start(self) -> None:
        """Open every tracker now (W&B's start takes seconds: not on the thread the live records arrive on)."""
        with self.lock:
            for name in self.folders():
                self._writer(name)

    def step(self, record: dict) -> None:
        """A live trainer step record (``pipeline.runtime.live``): its figures at its step on its axis."""
        r = record["round"]
        with self.lock:
            self._write(axis_of(r), record["global_step"], step_scalars(r, record, self.kl_coef))
            self._save()

    def catch_up(self) -> list[int]:
        """Log every committed round a tracker lacks (its step figures not logged yet, then its figures); return
        those rounds."""
        folders = self.folders()
        if not folders:
            return []
        records = read_metrics(self.run)
        axis, logged = step_axis(self.run, records), []
        with self.lock:
            for m in records:
                if all(m.round <= self._done(name).get("rounds", BEFORE["rounds"]) for name in folders):
                    continue
                rows = read_train_steps(self.run, m.round)
                start = axis_start(axis, m.round)
                for row, step in zip(rows, step_numbers(rows, axis[m.round][1])):
                    self._write(axis_of(m.round), start + step, step_scalars(m.round, row, self.kl_coef))
                self._write("rounds", m.round, scalars(m))
                self._save()
                logged.append(m.round)
        return logged

    def _write(self, axis: str, step: int, values: dict[str, float]) -> None:
        """``values`` at ``step`` of ``axis`` to each tracker whose record ends before it."""
        for name in self.folders():
            done = self._done(name)
            if step > done.get(axis, BEFORE[axis]):
                self._writer(name).write(axis, step, values)
                done[axis] = step
                self.unsaved.add(name)

    def _save(self) -> None:
        """Flush the trackers written to, then record what they hold."""
        for name in sorted(self.unsaved):
            self.open[name].flush()
            put_atomic(self.run.fs, f"{self.folders()[name]}/{LOGGED}", json.dumps(self.done[name]).encode())
        self.unsaved.clear()

    def _done(self, name: str) -> dict[str, int]:
        """The last step tracker ``name`` holds on each axis (per its record)."""
        if name not in self.done:
            self.done[name] = logged_steps(self.folders()[name])
        return self.done[name]

    def _writer(self, name: str):
        if name not in self.open:
            folder = self.folders()[name]
            self.open[name] = TensorBoard(folder, self._done(name)) if name == "tensorboard" else \
                Wandb(self.cfg.wandb, self.run.root, self.config, self._wandb_id(folder))
        return self.open[name]

    def _wandb_id(self, folder: str) -> str:
        """The run's W&B id, kept in ``folder`` (made at the first start): the same W&B run wherever the run
        directory moves."""
        path = f"{folder}/{RUN_ID}"
        if not os.path.exists(path):
            put_atomic(self.run.fs, path, f"gigpo-{uuid.uuid4().hex[:12]}".encode())
        with open(path) as fh:
            return fh.read()

    def close(self) -> None:
        for writer in self.open.values():
            writer.close()
        self.open = {}


def logged_steps(folder: str) -> dict[str, int]:
    """The last step a tracker's ``folder`` holds on each axis it has logged to (per its record)."""
    try:
        with open(os.path.join(folder, LOGGED)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}
