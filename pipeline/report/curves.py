"""Training and round figures: per-step trainer curves (RL, SFT), collect statistics, anchors, stage times.

Per-step curves number the optimizer steps on their own axis: the RL steps of
rounds 0.. from 1, the warm start's SFT steps apart (as the trackers do); each
round is its own segment, dotted lines mark where a round starts and the top
axis names it.
"""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from pipeline.report.draw import ROUND, grid, legend_below, legend_right, lines, note, round_ticks
from pipeline.report.sources import RoundMetrics, ReportData

STAGES = ("demos", "warm_start", "collect", "advantage", "train", "evaluate")
STEP_X = "RL optimizer step (from round 0)"
# per-step metric -> (title, y label with units)
RL_STEPS = {"loss": ("loss", "loss (unitless)"),
            "approx_kl": ("approx. KL, sampling to current policy", "KL (nats per token)"),
            "entropy": ("token entropy", "entropy (nats per token)"),
            "grad_norm": ("gradient norm before clipping", "grad norm (L2)"),
            "clip_frac": ("clipped tokens (PPO ratio)", "share of response tokens"),
            "lr": ("learning rate", "learning rate (per step)")}
SFT_STEPS = {k: RL_STEPS[k] for k in ("loss", "entropy", "grad_norm", "lr")}
SFT_STEPS["loss"] = ("SFT loss", "cross-entropy (nats per token)")


def _round_marks(ax, spans: dict[int, tuple[int, int]]) -> None:
    """Dotted lines where each round's steps start (``spans``: round -> first and last global step); the top
    axis names the rounds at their middles (at most ~12 names)."""
    for first, _ in spans.values():
        ax.axvline(first - 0.5, color="grey", linestyle=":", linewidth=0.8)
    every = max(1, -(-len(spans) // 12))
    named = list(spans.items())[::every]
    top = ax.secondary_xaxis("top")
    top.set_xticks([(a + b) / 2 for _, (a, b) in named], [f"round {r}" for r, _ in named], fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def step_curves(data: ReportData, rounds: list[int], metrics: dict[str, tuple[str, str]], what: str, cols: int,
                xlabel: str = STEP_X, marks: bool = True):
    """One panel per metric against the global optimizer step, one segment per round of ``rounds`` (``marks``:
    round boundaries marked)."""
    fig, axes = grid(len(metrics), cols, w=4.4, h=3.2)
    steps = {r: data.steps.get(r, []) for r in rounds if data.steps.get(r)}
    drawn: dict[str, dict[int, dict]] = {}
    for ax, (key, (title, ylabel)) in zip(axes, metrics.items()):
        drawn[key] = {}
        for r, rows in steps.items():
            pts = [(s["global_step"], s[key]) for s in rows if s.get(key) is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, color="C0", linewidth=1.0, marker="o" if len(pts) <= 30 else None, markersize=3)
                drawn[key][r] = {"x": list(x), "y": list(y)}
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if not drawn[key]:
            note(ax, f"no {what} steps recorded")
        elif marks:
            _round_marks(ax, {r: (rows[0]["global_step"], rows[-1]["global_step"]) for r, rows in steps.items()})
    return fig, drawn


def training(data: ReportData):
    """RL rounds' per-step trainer metrics (round -1, the warm start, is in ``sft``)."""
    return step_curves(data, [r for r in data.rounds if r >= 0], RL_STEPS, "RL", cols=3)


def sft(data: ReportData):
    """The warm start's (round -1) per-step SFT metrics."""
    return step_curves(data, [r for r in data.rounds if r < 0], SFT_STEPS, "SFT", cols=2,
                       xlabel="optimizer step (warm start's SFT)", marks=False)


def _per_round(records: list[RoundMetrics], name: str) -> list:
    return [getattr(m, name) for m in records]


def collect(data: ReportData):
    """What the policy generated while collecting, per RL round."""
    rl = [m for m in data.records if m.round >= 0]
    rounds = [m.round for m in rl]
    fig, axes = grid(3, 3, w=4.4, h=3.2)
    drawn = {}
    for ax, (name, title, ylabel) in zip(axes, (
            ("format_error_share", "responses without a readable action", "share of steps"),
            ("nothing_happens_share", 'actions the env answered "Nothing happens."', "share of steps"),
            ("response_length", "response length", "tokens per step (mean)"))):
        drawn[name] = lines(ax, rounds, {title: _per_round(rl, name)})
        ax.set(title=title, xlabel=ROUND, ylabel=ylabel)
        round_ticks(ax, rounds)
    return fig, drawn


PURITY = {"anchor_pure_share": "shared anchor groups of one true state",
          "impure_step_share": "steps in groups of several true states",
          "missed_revisit_share": "true-state revisits left in singletons"}


def anchors(data: ReportData):
    """Anchored share, anchor purity against the env's true state, mean |A_E| and |A_S|, per RL round."""
    rl = [m for m in data.records if m.round >= 0]
    rounds = [m.round for m in rl]
    fig, axes = grid(4, 4, w=3.8, h=3.2)
    drawn = {"anchored_share": lines(axes[0], rounds, {"anchored share": _per_round(rl, "anchored_share")}),
             "purity": lines(axes[1], rounds, {label: _per_round(rl, k) for k, label in PURITY.items()}),
             "mean_abs_adv_episode": lines(axes[2], rounds, {"mean |A_E|": _per_round(rl, "mean_abs_adv_episode")}),
             "mean_abs_adv_step": lines(axes[3], rounds, {"mean |A_S|": _per_round(rl, "mean_abs_adv_step")})}
    for ax, (title, ylabel) in zip(axes, (
            ("anchored share", "share of steps (anchor groups of 2+)"),
            ("anchor purity (env's true state)", "share"),
            ("mean |A_E| over steps", "|A_E| (normalised units)"),
            ("mean |A_S| over steps", "|A_S| (normalised units)"))):
        ax.set(title=title, xlabel=ROUND, ylabel=ylabel)
        round_ticks(ax, rounds)
    legend_below(axes[1])
    return fig, drawn


def stage_times(data: ReportData):
    """Wall time of each stage, stacked per round."""
    fig, (ax,) = grid(1, 1, w=6.5, h=3.6)
    rounds, bottom, drawn = data.rounds, np.zeros(len(data.rounds)), {}
    for stage in [s for s in STAGES if any(m.stage_seconds.get(s) for m in data.records)]:
        secs = np.array([m.stage_seconds.get(stage, 0.0) for m in data.records])
        ax.bar(rounds, secs, bottom=bottom, label=stage)
        bottom, drawn[stage] = bottom + secs, secs.tolist()
    ax.set(title="stage wall time per round", xlabel=ROUND, ylabel="wall time (s)")
    round_ticks(ax, rounds)
    legend_right(ax)
    return fig, drawn
