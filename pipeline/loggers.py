"""Optional experiment trackers fed from each round's committed metrics.

TensorBoard (``logging.tensorboard: true``) writes ``RUN/tensorboard``; it
needs the ``tensorboard`` package (the ``test`` and ``train`` extras have it).
Metrics are written after the round's metrics stage is committed, with the
round as the step, so a resumed run logs each round once more at most (with
the same values).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from pipeline.metrics import RoundMetrics


@dataclass(frozen=True)
class LoggingConfig:
    """Where round metrics go besides ``RUN/metrics.jsonl``."""

    tensorboard: bool = False  # write TensorBoard scalars to RUN/tensorboard


def scalars(metrics: RoundMetrics) -> dict[str, float]:
    """Flat ``name -> value`` of a round's numeric metrics (stage times as ``stage_seconds/<stage>``).

    >>> scalars(RoundMetrics(round=3, policy_version=3, loss=0.5, stage_seconds={"train": 2.0}))["stage_seconds/train"]
    2.0
    """
    out = {k: float(v) for k, v in asdict(metrics).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("round", "policy_version")}
    out.update({f"stage_seconds/{k}": float(v) for k, v in metrics.stage_seconds.items()})
    return out


def log_round(metrics: RoundMetrics, cfg: LoggingConfig, run_root: str) -> None:
    """Send one round's metrics to the configured trackers."""
    if not cfg.tensorboard:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RuntimeError("logging.tensorboard is true but the tensorboard package is not installed "
                           "(pip install tensorboard)") from exc
    with SummaryWriter(os.path.join(run_root, "tensorboard")) as writer:
        for name, value in scalars(metrics).items():
            writer.add_scalar(name, value, metrics.round)
