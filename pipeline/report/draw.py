"""Drawing helpers shared by the figures: Wilson intervals, line styles, legends outside the axes, saving.

>>> print("%.4f %.4f" % wilson(5, 20))
0.1119 0.4687
"""
from __future__ import annotations

from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Z95 = NormalDist().inv_cdf(0.975)
WON = "success rate (share of episodes won)"
ROUND = "round"

# (marker, line style, marker size, line width, hollow) of the 1st, 2nd, ... line of a panel: each drawn
# smaller and thinner than the one before, so an earlier line shows around a later one that coincides with it
STYLES = [("o", "-", 12, 2.8, True), ("s", "--", 8, 2.0, False), ("^", ":", 5.5, 1.5, False),
          ("D", "-.", 3, 1.0, False)]
MORE_MARKERS = "vP*Xh<>p"


def wilson(won, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (95% by default) of ``won`` successes in ``n`` trials; arrays or numbers."""
    won, n = np.asarray(won, dtype=float), np.asarray(n, dtype=float)
    p = won / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def style(i: int) -> dict:
    """Matplotlib keywords of a panel's ``i``-th series (beyond ``STYLES``: other markers, plain lines)."""
    if i >= len(STYLES):
        return {"marker": MORE_MARKERS[(i - len(STYLES)) % len(MORE_MARKERS)], "linestyle": "-", "markersize": 5,
                "linewidth": 1.0, "color": f"C{i % 10}"}
    marker, line, size, width, hollow = STYLES[i]
    return {"marker": marker, "linestyle": line, "markersize": size, "linewidth": width, "color": f"C{i}",
            **({"markerfacecolor": "none", "markeredgewidth": 1.5} if hollow else {})}


def lines(ax, x: list, series: dict[str, list], first: int = 0) -> dict[str, dict]:
    """One styled line per series (``label -> values at x``, None: no point); the points drawn, by label."""
    drawn = {}
    for i, (label, values) in enumerate(series.items(), start=first):
        pts = [(a, v) for a, v in zip(x, values) if v is not None]
        if pts:
            ax.plot(*zip(*pts), label=label, **style(i))
            drawn[label] = {"x": [a for a, _ in pts], "y": [v for _, v in pts]}
    if not drawn:
        note(ax, "not recorded")
    return drawn


def rates(ax, rounds, won, n, i: int, label: str, x=None, joined: bool = False, counts: bool = False,
          **kw) -> dict:
    """Success rates ``won / n`` with Wilson 95% error bars at ``x`` (default: ``rounds``), joined by a line or
    markers only; ``counts`` writes ``won/n`` above each point; ``kw`` overrides the style. The series drawn."""
    rounds, won, n = list(rounds), np.asarray(won, dtype=float), np.asarray(n, dtype=float)
    x = rounds if x is None else list(x)
    if not rounds:
        return {"round": [], "x": [], "y": [], "lo": [], "hi": [], "won": [], "n": []}
    lo, hi = wilson(won, n)
    y = won / n
    kw = style(i) | ({} if joined else {"linestyle": "none"}) | kw
    ax.errorbar(x, y, yerr=[y - lo, hi - y], capsize=3, elinewidth=1.0, label=label, **kw)
    if counts:
        for a, top, k, m in zip(x, hi, won, n):
            ax.annotate(f"{k:.0f}/{m:.0f}", (a, top), textcoords="offset points", xytext=(0, 3), ha="center",
                        fontsize=7, color=kw["color"])
    return {"round": rounds, "x": x, "y": y.tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
            "won": won.astype(int).tolist(), "n": n.astype(int).tolist()}


def round_ticks(ax, rounds: list[int]) -> None:
    """Integer round ticks (at most ~20 named), round -1 named ``warm start``."""
    named = rounds[::max(1, -(-len(rounds) // 20))]
    ax.set_xticks(named, ["warm start" if r < 0 else str(r) for r in named])
    if rounds:
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.9)


def note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def legend_right(ax) -> None:
    """The panel's legend beside it, never over a point."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, borderaxespad=0).set_in_layout(False)


def legend_below(ax) -> None:
    """The panel's legend under it, never over a point."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7).set_in_layout(False)


def figure_legend(fig) -> None:
    """One legend for the figure's series (by label, first seen), right of every panel."""
    seen = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def grid(n: int, cols: int, w: float = 4.0, h: float = 3.0):
    """A figure of ``n`` panels in ``cols`` columns; the panels (extra ones removed)."""
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, min(cols, n), figsize=(w * min(cols, n), h * rows), squeeze=False)
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    return fig, list(axes.flat[:n])


def save(fig, path: str) -> None:
    fig.tight_layout()  # legends outside the axes are out of the layout: they leave the panels their size
    legends = [leg for leg in [ax.get_legend() for ax in fig.axes] + fig.legends if leg is not None]
    fig.savefig(path, dpi=100, bbox_inches="tight", bbox_extra_artists=legends)  # the legends stay in the image
    plt.close(fig)
