"""What the report reads from a run: the one module that imports the run-record readers, and the table queries.

Every query is one vectorised Polars scan over the committed tables. A task's
type is its ``task_id`` up to the first ``-`` (ALFRED's task folder names start
with it: ``pick_and_place_simple-Mug-None-Desk-308/trial_...``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

import storage
from pipeline.records import RoundMetrics, axis_start, read_metrics, read_train_steps, step_axis
from storage.schemas import TABLE_STAGE

__all__ = ["RoundMetrics", "ReportData", "load", "task_table", "outcomes", "advantage_columns", "read_train_steps"]

HIST_COLUMNS = ("adv_episode", "adv_step", "advantage", "anchor_group_size")


def _committed(run: storage.Run, stage: str, among: list[int]) -> list[int]:
    return [r for r in among if run.is_committed(r, stage)]


def _task_type() -> pl.Expr:
    return pl.col("task_id").str.split("-").list.first().alias("task_type")


def _counts(frame: pl.LazyFrame, by: list[str]) -> pl.LazyFrame:
    return frame.group_by(by).agg(pl.col("policy_version").max(), pl.len().alias("episodes"),
                                  pl.col("won").sum().cast(pl.Int64).alias("won"),
                                  pl.col("length").mean().alias("mean_length")).sort(by)


def _scan(run: storage.Run, table: str, rounds: list[int]) -> pl.LazyFrame:
    return run.scan(table, rounds=_committed(run, TABLE_STAGE[table], rounds))


def outcomes(run: storage.Run, table: str, rounds: list[int]) -> pl.DataFrame:
    """``round, policy_version, episodes, won, mean_length`` per round of ``rounds`` in the ``episodes`` or
    ``evaluation`` table."""
    return _counts(_scan(run, table, rounds), ["round"]).collect()


def task_table(run: storage.Run, rounds: list[int]) -> pl.DataFrame:
    """Episodes, wins, success and mean length per (set, round, task type); set ``train`` (the ``episodes``
    table), ``expert`` (its round -1: the warm start's demonstrations) or ``held-out`` (the ``evaluation`` table)."""
    parts = []
    for name, table in (("train", "episodes"), ("held-out", "evaluation")):
        rows = _scan(run, table, rounds).with_columns(_task_type())
        expert = pl.col("round") < 0 if table == "episodes" else pl.lit(False)  # round -1 collects demonstrations
        parts.append(_counts(rows, ["round", "task_type"])
                     .with_columns(set=pl.when(expert).then(pl.lit("expert")).otherwise(pl.lit(name))).collect())
    both = pl.concat(parts)
    return both.select("set", "round", "task_type", "episodes", "won",
                       (pl.col("won") / pl.col("episodes")).alias("success"), "mean_length")


def env_steps(run: storage.Run, rounds: list[int]) -> dict[int, int]:
    """``round -> steps rows`` (environment steps collected) of ``rounds`` with committed trajectories."""
    counts = _scan(run, "steps", rounds).group_by("round").len().collect()
    return dict(zip(counts["round"].to_list(), counts["len"].to_list()))


def advantage_columns(run: storage.Run, round: int) -> dict[str, np.ndarray]:
    """The round's A_E, A_S, total advantage and anchor-group size per step, as arrays."""
    frame = run.scan("advantages", rounds=[round]).select(HIST_COLUMNS).collect()
    return {c: frame[c].to_numpy() for c in HIST_COLUMNS}


@dataclass
class ReportData:
    """Everything the figures and the summary draw, read once."""

    records: list[RoundMetrics]
    train: pl.DataFrame  # outcomes(run, "episodes")
    held_out: pl.DataFrame  # outcomes(run, "evaluation")
    tasks: pl.DataFrame  # task_table(run)
    env_steps: dict[int, int]  # round -> steps collected
    steps: dict[int, list[dict]]  # round -> per-step trainer metrics, each with "global_step"
    advantages: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # round -> advantage_columns

    @property
    def rounds(self) -> list[int]:
        return [m.round for m in self.records]


def _train_steps(run: storage.Run, records: list[RoundMetrics]) -> dict[int, list[dict]]:
    """Each round's trainer steps, numbered on their axis (1-based): the SFT steps of round -1, the RL steps of
    rounds 0.. (as the trackers number them)."""
    out, axis = {}, step_axis(run, records)
    for r in axis:
        rows, start = read_train_steps(run, r), axis_start(axis, r)
        out[r] = [{**row, "global_step": start + i + 1} for i, row in enumerate(rows)]
    return out


def load(run: storage.Run, hist_rounds: int) -> ReportData:
    """The run's report data; advantage histograms for at most ``hist_rounds`` rounds (first, last, spread)."""
    records = read_metrics(run)
    if not records:
        raise ValueError(f"{run.uri}: no committed round has metrics yet")
    rounds = [m.round for m in records]
    with_adv = _committed(run, "advantages", rounds)
    picked = sorted({with_adv[i] for i in np.linspace(0, len(with_adv) - 1, hist_rounds).round().astype(int)}
                    if with_adv else set())
    return ReportData(records=records, train=outcomes(run, "episodes", rounds),
                      held_out=outcomes(run, "evaluation", rounds), tasks=task_table(run, rounds),
                      env_steps=env_steps(run, rounds), steps=_train_steps(run, records),
                      advantages={r: advantage_columns(run, r) for r in picked})
