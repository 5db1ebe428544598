"""The experiment trackers' writers and their config: TensorBoard events and a Weights & Biases run.

Each writer takes ``write(axis, step, {name: value})`` on one of ``AXES`` and is
opened once per driver (one TensorBoard event file per axis and driver start, not
per round); ``close`` flushes it.

>>> import tempfile
>>> tb = TensorBoard(tempfile.mkdtemp(), done={})
>>> tb.write("train", 3, {"train/loss": 0.5}); tb.close()
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from pipeline.validators import choice

WANDB_MODES = ("online", "offline")


@dataclass(frozen=True)
class WandbConfig:
    """A Weights & Biases run for the GiGPO run (``logging.wandb``; needs the ``wandb`` extra)."""

    project: str = "gigpo"  # W&B project
    entity: str | None = None  # W&B team or user (None: the API key's default)
    mode: str = "online"  # online | offline (files under RUN/wandb; `wandb sync` uploads them later)
    name: str | None = None  # display name (None: the run directory's name)

    def __post_init__(self) -> None:
        choice(self, "mode", WANDB_MODES)
        if not self.project:
            raise ValueError("WandbConfig.project must not be empty")


@dataclass(frozen=True)
class LoggingConfig:
    """Where round metrics go besides ``RUN/metrics.jsonl``."""

    tensorboard: bool = False  # write TensorBoard scalars to RUN/tensorboard
    wandb: WandbConfig | None = None  # a Weights & Biases run (None: none)

    def __post_init__(self) -> None:
        for key, package, extra in (("tensorboard", "tensorboard", "train"), ("wandb", "wandb", "wandb")):
            if getattr(self, key) and importlib.util.find_spec(package) is None:
                raise ValueError(f"LoggingConfig.{key} is set but the {package} package is not installed "
                                 f"(pip install -e .[{extra}])")


# Each tracker's step axes: the warm start's SFT optimizer steps, the RL optimizer steps of rounds >= 0, and rounds.
AXES = ("sft", "train", "rounds")
BEFORE = {"sft": 0, "train": 0, "rounds": -2}  # on each axis, the step before its first


class TensorBoard:
    """Scalars in one TensorBoard run per axis: ``folder/<axis>`` (TensorBoard reads ``folder`` as three runs).

    An axis's writer opens at its first write, in a new event file that purges
    the events of steps after ``done[axis]`` (the last step an earlier driver
    recorded as logged): those it flushed but did not record are written again.
    """

    def __init__(self, folder: str, done: dict[str, int]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError("logging.tensorboard is true but the tensorboard package is not installed "
                               "(pip install tensorboard)") from exc
        self.folder, self.done, self.writers, self.summary_writer = folder, dict(done), {}, SummaryWriter

    def write(self, axis: str, step: int, values: dict[str, float]) -> None:
        if axis not in self.writers:
            purge = self.done.get(axis, BEFORE[axis]) + 1
            self.writers[axis] = self.summary_writer(os.path.join(self.folder, axis), purge_step=purge)
        for name, value in values.items():
            self.writers[axis].add_scalar(name, value, step)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class Wandb:
    """One W&B run per GiGPO run, its files in ``RUN/wandb``: each driver start continues the run ``run_id``
    (``resume="allow"``).

    Each axis has its step metric (``sft/step``, ``train/step``, ``round``) that the
    figures logged on it are plotted against (``define_metric``).
    """

    STEP = {"sft": "sft/step", "train": "train/step", "rounds": "round"}

    def __init__(self, cfg: WandbConfig, run_root: str, config: dict, run_id: str):
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError("logging.wandb is set but the wandb package is not installed "
                               "(pip install -e .[wandb])") from exc
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=run_root, config=config,
                              name=cfg.name or os.path.basename(os.path.normpath(run_root)),
                              id=run_id, resume="allow", settings=wandb.Settings(console="off"))
        for key in self.STEP.values():
            self.run.define_metric(key)
        self.defined = set(self.STEP.values())

    def write(self, axis: str, step: int, values: dict[str, float]) -> None:
        key = self.STEP[axis]
        for name in sorted(values.keys() - self.defined):
            self.run.define_metric(name, step_metric=key)
            self.defined.add(name)
        self.run.log(values | {key: step})

    def flush(self) -> None:
        """Nothing to do: W&B's own process writes each ``log`` call."""

    def close(self) -> None:
        self.run.finish()
