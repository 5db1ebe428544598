"""``summary.md``: the figures, held-out success with counts and Wilson intervals, task types, per-round numbers."""
from __future__ import annotations

import polars as pl

from pipeline.report.draw import wilson
from pipeline.report.sources import ReportData, RoundMetrics


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]) + "\n"


def interval(won: int, n: int) -> str:
    """``0.1119-0.4687``: the Wilson 95% interval of ``won`` of ``n``, to 4 decimals."""
    lo, hi = wilson(won, n)
    return f"{lo:.4f}-{hi:.4f}"


def held_out(frame: pl.DataFrame) -> str:
    """One row per evaluated round: the checkpoint's policy version, episodes, wins, success and its interval."""
    if frame.is_empty():
        return "No round was evaluated.\n"
    rows = [[r["round"], r["policy_version"], r["episodes"], r["won"], r["won"] / r["episodes"],
             interval(r["won"], r["episodes"])] for r in frame.iter_rows(named=True)]
    return _table(["round", "policy version", "episodes", "won", "success", "95% interval (Wilson)"], rows)


def task_types(frame: pl.DataFrame) -> str:
    """One row per (set, round, task type) of ``sources.task_table``."""
    rows = [[r["set"], r["round"], r["task_type"], r["episodes"], r["won"], r["success"],
             interval(r["won"], r["episodes"]), r["mean_length"]] for r in frame.iter_rows(named=True)]
    return _table(["set", "round", "task type", "episodes", "won", "success", "95% interval (Wilson)",
                   "mean length (steps)"], rows)


def baseline(frame: pl.DataFrame) -> str:
    """A line on the held-out success before training (round -1), when it was measured."""
    before = frame.filter(pl.col("round") < 0)
    if before.is_empty():
        return ""
    won, n = before["won"][0], before["episodes"][0]
    return (f"Held-out success before training (baseline): {won / n:.4g} ({won} of {n} episodes, "
            f"95% interval {interval(won, n)})\n\n")


ADVANTAGE_FIELDS = {"anchored_share", "anchor_pure_share"}  # round -1 has no advantages
# round -1 has these only with demonstrations
COLLECT_FIELDS = {"success_rate", "episode_length", "format_error_share", "nothing_happens_share"}


def _cell(m: RoundMetrics, name: str):
    """``name`` of the round; None where round -1 cannot have it (no advantages; no steps without demos)."""
    absent = m.round < 0 and (name in ADVANTAGE_FIELDS or name in COLLECT_FIELDS and "demos" not in m.stage_seconds)
    return None if absent else getattr(m, name)


def summary(records: list[RoundMetrics]) -> str:
    """Markdown table of the run's headline numbers, one row per round (round -1: before round 0)."""
    cols = ["round", "success_rate", "eval_success_rate", "episode_length", "format_error_share",
            "nothing_happens_share", "anchored_share", "anchor_pure_share", "loss", "kl", "clip_fraction",
            "rollout_tokens_per_s", "train_tokens_per_s"]
    rows = []
    for m in records:
        total = sum(m.stage_seconds.values())
        rows.append([_cell(m, c) for c in cols] + [m.stage_seconds.get("advantage", 0.0) / total if total else None])
    return _table(cols + ["advantage share of round"], rows)


def markdown(uri: str, data: ReportData, figures: dict[str, str]) -> str:
    """The whole ``summary.md``; ``figures``: file name -> what it shows."""
    done = sum(m.round >= 0 for m in data.records)
    listing = "".join(f"- `{name}`: {what}\n" for name, what in figures.items())
    return (f"# Run {uri}\n\n{done} round(s) committed.\n\n{baseline(data.held_out)}## Figures\n\n{listing}\n"
            f"## Held-out success\n\nRound r's row is round r's checkpoint (round -1: the starting policy).\n\n"
            f"{held_out(data.held_out)}\n## Success and episode length by task type\n\n"
            f"Task type: the task id up to its first '-'; set `expert`: the warm start's demonstrations.\n\n"
            f"{task_types(data.tasks)}\n## Per round\n\nThe round's `success_rate` is the training episodes' "
            f"(round -1: the expert's demonstrations); `eval_success_rate` is held-out.\n\n{summary(data.records)}")
