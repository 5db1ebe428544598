"""Advantage histograms: one row per round, A_E, A_S, the total advantage and the anchor-group sizes.

A column shares its bins across rounds, so rows compare; advantage counts are on
a log scale (most steps sit near 0, the tails matter). A_S is shown for the
steps in shared anchor groups only (a singleton's A_S is 0 by definition); the
group sizes are counted per step (``anchor_group_size``: a step in a group of
5 counts once at 5), so the bar at 1 is the share of steps GiGPO cannot compare.
"""
from __future__ import annotations

import numpy as np

from pipeline.report.draw import grid, note
from pipeline.report.sources import ReportData

BINS = 40
# column -> (title, x label)
PANELS = {"adv_episode": ("A_E", "A_E, episode advantage (normalised units)"),
          "adv_step": ("A_S, shared anchor groups", "A_S, step advantage (normalised units)"),
          "advantage": ("advantage", "advantage the trainer uses (normalised units)"),
          "anchor_group_size": ("anchor group size", "size of the step's anchor group (steps)")}


def _values(cols: dict[str, np.ndarray], name: str) -> np.ndarray:
    values = cols[name]
    return values[cols["anchor_group_size"] >= 2] if name == "adv_step" else values


def _edges(arrays: list[np.ndarray], integer: bool) -> np.ndarray:
    """Bins shared by a column's rounds: ~BINS, or one per integer size (wider past 100)."""
    both = np.concatenate(arrays) if arrays else np.zeros(0)
    if both.size == 0:
        return np.array([-0.5, 0.5])
    lo, hi = float(both.min()), float(both.max())
    if integer:
        return np.arange(lo, hi + 1 + (width := max(1, -(-int(hi) // 100))), width) - 0.5
    return np.linspace(lo - 0.5, hi + 0.5, BINS + 1) if lo == hi else np.linspace(lo, hi, BINS + 1)


def advantages(data: ReportData):
    """Histograms of A_E, A_S, advantage and anchor-group size for the chosen rounds (rows)."""
    rounds = sorted(data.advantages)
    fig, axes = grid(4 * max(1, len(rounds)), 4, w=3.6, h=2.6)
    drawn: dict[int, dict[str, dict]] = {r: {} for r in rounds}
    for j, (name, (title, xlabel)) in enumerate(PANELS.items()):
        per_round = {r: _values(data.advantages[r], name) for r in rounds}
        edges = _edges(list(per_round.values()), integer=name == "anchor_group_size")
        for i, r in enumerate(rounds):
            ax, values = axes[4 * i + j], per_round[r]
            counts, _, _ = ax.hist(values, bins=edges, color=f"C{j}")
            drawn[r][name] = {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}
            if name != "anchor_group_size":
                ax.set_yscale("log")  # a spike at 0 would flatten the tails
            ax.set(title=f"round {r}: {title} ({values.size} steps)", xlabel=xlabel,
                   ylabel="steps" if name == "anchor_group_size" else "steps (log scale)")
            ax.title.set_fontsize(9)
    if not rounds:
        axes[0].set(title="advantages", xlabel="advantage (normalised units)", ylabel="steps")
        for ax in axes[1:]:
            ax.remove()
        note(axes[0], "no round has committed advantages")
    return fig, drawn
