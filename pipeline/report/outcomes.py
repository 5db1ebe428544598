"""Outcome figures: success per round, per task type, and against env steps and wall time.

Each builder returns the figure and the series it drew (for tests and for the
summary). Held-out success is drawn only where a round was evaluated, as
markers with Wilson 95% error bars, half a round right of its round (it
measures the round's checkpoint, the policy that collects the next round);
the expert's demonstrations (round -1's episodes) have their own marker.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.report.draw import (ROUND, WON, figure_legend, grid, legend_right, lines, note, rates, round_ticks,
                                  style)
from pipeline.report.sources import ReportData

HELD_OUT_DX = 0.5  # held-out of round r: after its update, before round r+1's collect
HELD_OUT_X = f"{ROUND} (held-out: after the round's update)"
EXPERT_STYLE = {"marker": "*", "markersize": 14, "color": "C2", "linestyle": "none"}


def _policy(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("round") >= 0)


def success(data: ReportData):
    """Training-task success per round (a line), held-out at evaluated rounds, the expert's demonstrations."""
    fig, (ax,) = grid(1, 1, w=7.5, h=4.2)
    train, ev, demos = _policy(data.train), data.held_out, data.train.filter(pl.col("round") < 0)
    drawn = {
        "train": rates(ax, train["round"], train["won"], train["episodes"], 0, "policy, training tasks (collect)",
                       joined=True),
        "held_out": rates(ax, ev["round"], ev["won"], ev["episodes"], 1, "policy, held-out tasks",
                          x=[r + HELD_OUT_DX for r in ev["round"]], counts=True),
        "expert": rates(ax, demos["round"], demos["won"], demos["episodes"], 2,
                        "expert demonstrations (warm-start data)", **EXPERT_STYLE),
    }
    ax.set(title="success per round (bars: Wilson 95% interval; held-out: won/episodes)", xlabel=HELD_OUT_X,
           ylabel=WON, ylim=(-0.02, 1.1))
    round_ticks(ax, data.rounds)
    legend_right(ax)
    return fig, drawn


def _cumulative(data: ReportData) -> tuple[dict[int, float], dict[int, float], str]:
    """``round -> env steps`` and ``round -> wall time`` by the end of the round, and the time unit."""
    steps = np.cumsum([data.env_steps.get(r, 0) for r in data.rounds])
    secs = np.cumsum([sum(m.stage_seconds.values()) for m in data.records])
    unit, div = ("min", 60.0) if secs[-1] < 7200 else ("h", 3600.0)
    return dict(zip(data.rounds, steps.tolist())), dict(zip(data.rounds, (secs / div).tolist())), unit


def progress(data: ReportData):
    """Training and held-out success against the env steps collected and the wall time, both cumulative."""
    steps, hours, unit = _cumulative(data)
    fig, axes = grid(2, 2, w=4.8, h=3.6)
    train, ev = _policy(data.train), data.held_out
    drawn = {}
    for ax, (name, at, xlabel) in zip(axes, (
            ("env_steps", steps, "env steps collected by the round's end (steps, demonstrations included)"),
            ("wall_time", hours, f"wall time by the round's end ({unit}, all stages)"))):
        drawn[name] = {
            "train": rates(ax, train["round"], train["won"], train["episodes"], 0, "policy, training tasks",
                           x=[at[r] for r in train["round"]], joined=True),
            "held_out": rates(ax, ev["round"], ev["won"], ev["episodes"], 1, "policy, held-out tasks",
                              x=[at[r] for r in ev["round"]]),
        }
        ax.set(title=f"success against {name.replace('_', ' ')}", xlabel=xlabel, ylabel=WON, ylim=(-0.02, 1.05))
        ax.set_xlim(left=0)  # the warm start's cost shows
    figure_legend(fig)
    return fig, drawn


def _by_type(frame: pl.DataFrame, kind: str) -> dict[str, pl.DataFrame]:
    rows = frame.filter(pl.col("set") == kind)
    return {t: rows.filter(pl.col("task_type") == t).sort("round") for t in sorted(set(rows["task_type"]))}


def tasks(data: ReportData):
    """Success and mean episode length per task type: training episodes per round, held-out where evaluated."""
    fig, axes = grid(4, 2, w=4.8, h=3.4)
    train, ev = _by_type(data.tasks, "train"), _by_type(data.tasks, "held-out")
    types = sorted(set(train) | set(ev))
    dodge = {t: (i - (len(types) - 1) / 2) * 0.08 for i, t in enumerate(types)}  # held-out bars side by side
    drawn: dict[str, dict] = {k: {} for k in ("train_success", "train_length", "held_out_success",
                                              "held_out_length")}
    for t, rows in train.items():
        i, r = types.index(t), rows["round"].to_list()
        drawn["train_success"] |= lines(axes[0], r, {t: rows["success"].to_list()}, i)
        drawn["train_length"] |= lines(axes[1], r, {t: rows["mean_length"].to_list()}, i)
    for t, rows in ev.items():
        i, x = types.index(t), [r + HELD_OUT_DX + dodge[t] for r in rows["round"]]
        drawn["held_out_success"][t] = rates(axes[2], rows["round"], rows["won"], rows["episodes"], i, t, x=x)
        axes[3].plot(x, rows["mean_length"].to_list(), label=t, **(style(i) | {"linestyle": "none"}))
        drawn["held_out_length"][t] = {"round": rows["round"].to_list(), "x": x, "y": rows["mean_length"].to_list()}
    titles = ("training episodes: success", "training episodes: mean length",
              "held-out episodes: success (Wilson 95%)", "held-out episodes: mean length")
    for k, (ax, title) in enumerate(zip(axes, titles)):
        ax.set(title=title, xlabel=ROUND if k < 2 else HELD_OUT_X,
               ylabel=WON if k % 2 == 0 else "episode length (steps)")
        round_ticks(ax, data.rounds if k >= 2 else [r for r in data.rounds if r >= 0])
        if k % 2 == 0:
            ax.set_ylim(-0.02, 1.05)
        if not ax.has_data():
            note(ax, "no episodes")
    figure_legend(fig)
    return fig, drawn
