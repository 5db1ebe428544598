"""Optional experiment trackers fed from each round's committed metrics.

TensorBoard (``logging.tensorboard: true``) writes ``RUN/tensorboard``; it
needs the ``tensorboard`` package (the ``test`` and ``train`` extras have it).
Metrics are written after the round's metrics stage is committed, with the
round as the step. ``RUN/tensorboard/_logged_rounds.json`` records the rounds
whose events are flushed (written after the flush), so a driver start can log
the rounds a crash left unlogged; a crash between the flush and the record
logs a round once more at most (with the same values).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from pipeline.stages.record import RoundMetrics

LOGGED = "_logged_rounds.json"


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
    """Send one round's metrics to the configured trackers (unless already logged)."""
    log_rounds([metrics], cfg, run_root)


def log_rounds(records: list[RoundMetrics], cfg: LoggingConfig, run_root: str) -> list[int]:
    """Send the rounds of ``records`` that are not logged yet to the trackers; return those rounds."""
    if not cfg.tensorboard:
        return []
    folder = os.path.join(run_root, "tensorboard")
    done = logged_rounds(folder)
    todo = [m for m in records if m.round not in done]
    if not todo:
        return []
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RuntimeError("logging.tensorboard is true but the tensorboard package is not installed "
                           "(pip install tensorboard)") from exc
    with SummaryWriter(folder) as writer:
        for m in todo:
            for name, value in scalars(m).items():
                writer.add_scalar(name, value, m.round)
    rounds = sorted(done | {m.round for m in todo})  # recorded only once the writer has flushed and closed
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{LOGGED}")
    with open(tmp, "w") as fh:
        json.dump(rounds, fh)
    os.replace(tmp, os.path.join(folder, LOGGED))
    return [m.round for m in todo]


def logged_rounds(folder: str) -> set[int]:
    """Rounds whose TensorBoard events in ``folder`` are flushed (per its record)."""
    try:
        with open(os.path.join(folder, LOGGED)) as fh:
            return set(json.load(fh))
    except FileNotFoundError:
        return set()
