"""The experiment trackers' writers and their config: TensorBoard events and a Weights & Biases run.

Each writer takes ``write(step, {name: value})`` on the run's global step axis
and is opened once per driver (one TensorBoard event file per driver start, not
per round); ``close`` flushes it.

>>> import tempfile
>>> tb = TensorBoard(tempfile.mkdtemp())
>>> tb.write(3, {"loss": 0.5}); tb.close()
"""
from __future__ import annotations

import hashlib
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


class TensorBoard:
    """Scalars into ``folder`` (a new event file per writer; TensorBoard reads the folder as one run)."""

    def __init__(self, folder: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError("logging.tensorboard is true but the tensorboard package is not installed "
                               "(pip install tensorboard)") from exc
        self.writer = SummaryWriter(folder)

    def write(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Wandb:
    """One W&B run per GiGPO run: its id is derived from the run directory, so a resumed driver continues it."""

    def __init__(self, cfg: WandbConfig, folder: str, run_root: str, config: dict):
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError("logging.wandb is set but the wandb package is not installed "
                               "(pip install -e .[wandb])") from exc
        os.makedirs(folder, exist_ok=True)
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=folder, config=config,
                              name=cfg.name or os.path.basename(os.path.normpath(run_root)),
                              id=run_id(run_root), resume="allow", settings=wandb.Settings(console="off"))

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def flush(self) -> None:
        """Nothing to do: W&B's own process writes each ``log`` call."""

    def close(self) -> None:
        self.run.finish()


def run_id(run_root: str) -> str:
    """The W&B run id of a run directory (stable across driver starts).

    >>> run_id("/runs/a") == run_id("/runs/a/") != run_id("/runs/b")
    True
    """
    return "gigpo-" + hashlib.sha256(os.path.abspath(run_root).encode()).hexdigest()[:12]
