"""``python -m pipeline.report RUN``: PNG plots and a Markdown summary of a run.

Writes ``RUN/report/success.png`` (train and held-out success per round),
``training.png`` (one panel each: loss, KL, entropy, grad norm, clip fraction,
response length, invalid-action share, anchored share per round),
``anchors.png`` (anchored share, mean |A_E| and mean |A_S|, one panel each),
``purity.png`` (anchored share and anchor purity against the true state per round),
``stage_times.png`` (stage-time breakdown per round) and ``summary.md``.
Lines sharing a panel differ in colour, line style and marker (hollow and
larger for the first), so one that coincides with another stays visible.
Round -1, shown as "before", is what precedes round 0: the warm start (expert
success, SFT loss) and the held-out baseline of the starting policy.
"""
from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import storage  # noqa: E402
from pipeline.records import RoundMetrics, read_metrics  # noqa: E402

STAGES = ("demos", "warm_start", "collect", "advantage", "train", "evaluate")


def _ticks(ax, rounds: list[int]) -> None:
    ax.set_xticks(rounds, ["before" if r < 0 else str(r) for r in rounds])


# (marker, line style, marker size, line width, hollow) of the 1st, 2nd, ... line of a panel: each drawn
# smaller and thinner than the one before, so an earlier line shows around a later one that coincides with it
STYLES = [("o", "-", 12, 2.8, True), ("s", "--", 8, 2.0, False), ("^", ":", 5.5, 1.5, False),
          ("D", "-.", 3, 1.0, False)]


def _lines(ax, rounds: list[int], series: dict[str, list], title: str, ylabel: str) -> None:
    for (label, values), (marker, line, size, width, hollow) in zip(series.items(), STYLES):
        pts = [(r, v) for r, v in zip(rounds, values) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker=marker, linestyle=line, markersize=size, linewidth=width, label=label,
                    **({"markerfacecolor": "none", "markeredgewidth": 1.5} if hollow else {}))
    if not any(v is not None for values in series.values() for v in values):
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    _ticks(ax, rounds)
    if len(series) > 1:
        ax.legend(fontsize=8)


def _plot(path: str, title: str, rounds: list[int], series: dict[str, list], ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _lines(ax, rounds, series, title, ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _panels(path: str, rounds: list[int], panels: dict[str, list], cols: int) -> None:
    """One small plot per metric (``title -> values per round``): no metric can hide another."""
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, (title, values) in zip(axes.flat, panels.items()):
        _lines(ax, rounds, {title: values}, title, "")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


ADVANTAGE_FIELDS = {"anchored_share", "mean_abs_adv_episode", "mean_abs_adv_step"}  # round -1 has no advantages
COLLECT_FIELDS = {"success_rate", "invalid_action_share", "response_length"}  # round -1: only with demonstrations


def _col(records: list[RoundMetrics], name: str) -> list:
    """``name`` per round; None where round -1 cannot have it (no advantages; no steps without demonstrations)."""
    def absent(m: RoundMetrics) -> bool:
        return m.round < 0 and (name in ADVANTAGE_FIELDS or name in COLLECT_FIELDS and "demos" not in m.stage_seconds)

    return [None if absent(m) else getattr(m, name) for m in records]


TRAINING = {"loss": "loss", "KL to reference": "kl", "entropy": "entropy", "grad norm": "grad_norm",
            "clip fraction": "clip_fraction", "response length (tokens)": "response_length",
            "invalid-action share": "invalid_action_share", "anchored share": "anchored_share"}


def _stage_times(path: str, records: list[RoundMetrics]) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0.0] * len(records)
    rounds = [m.round for m in records]
    for stage in [s for s in STAGES if any(m.stage_seconds.get(s) for m in records)]:
        secs = [m.stage_seconds.get(stage, 0.0) for m in records]
        ax.bar(rounds, secs, bottom=bottom, label=stage)
        bottom = [b + s for b, s in zip(bottom, secs)]
    ax.set(title="stage time per round", xlabel="round", ylabel="seconds")
    _ticks(ax, rounds)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def baseline(records: list[RoundMetrics]) -> str:
    """A line on the held-out success before training (round -1), when it was measured."""
    before = [m.eval_success_rate for m in records if m.round < 0 and m.eval_success_rate is not None]
    return f"Held-out success before training (baseline): {before[0]:.4g}\n\n" if before else ""


def summary(records: list[RoundMetrics]) -> str:
    """Markdown table of the run's headline numbers, one row per round (round -1: before round 0)."""
    cols = ["round", "success_rate", "eval_success_rate", "episode_length", "invalid_action_share",
            "anchored_share", "anchor_pure_share", "loss", "kl", "clip_fraction", "rollout_tokens_per_s",
            "train_tokens_per_s"]
    lines = ["| " + " | ".join(cols + ["advantage share of round"]) + " |", "|" + "---|" * (len(cols) + 1)]
    for m in records:
        total = sum(m.stage_seconds.values())
        share = m.stage_seconds.get("advantage", 0.0) / total if total else None
        lines.append("| " + " | ".join([_fmt(getattr(m, c)) for c in cols] + [_fmt(share)]) + " |")
    return "\n".join(lines) + "\n"


def write_report(run: storage.Run, out_dir: str) -> list[str]:
    """Write the plots and summary for every committed round; return the files written."""
    records = read_metrics(run)
    if not records:
        raise ValueError(f"{run.uri}: no committed round has metrics yet")
    os.makedirs(out_dir, exist_ok=True)
    rounds = [m.round for m in records]
    names = ("success.png", "training.png", "anchors.png", "purity.png", "stage_times.png", "summary.md")
    files = [os.path.join(out_dir, n) for n in names]
    _plot(files[0], "success rate", rounds, {"collect (train tasks)": _col(records, "success_rate"),
                                             "held-out": _col(records, "eval_success_rate")}, "share won")
    _panels(files[1], rounds, {title: _col(records, name) for title, name in TRAINING.items()}, cols=4)
    _panels(files[2], rounds, {"steps in shared anchor groups": _col(records, "anchored_share"),
                               "mean |A_E|": _col(records, "mean_abs_adv_episode"),
                               "mean |A_S|": _col(records, "mean_abs_adv_step")}, cols=3)
    _plot(files[3], "anchor purity (true state)", rounds, {
        "steps in shared anchor groups": _col(records, "anchored_share"),
        "shared anchor groups of one state": _col(records, "anchor_pure_share"),
        "steps in impure anchor groups": _col(records, "impure_step_share"),
        "revisits left in singletons": _col(records, "missed_revisit_share")}, "share")
    _stage_times(files[4], records)
    with open(files[5], "w") as fh:
        rounds_done = sum(m.round >= 0 for m in records)
        fh.write(f"# Run {run.uri}\n\n{rounds_done} round(s) committed.\n\n{baseline(records)}{summary(records)}")
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__)
    ap.add_argument("run")
    ap.add_argument("--out", default=None, help="output folder (default: RUN/report, local runs only)")
    args = ap.parse_args(argv)
    run = storage.open_run(args.run)
    try:
        files = write_report(run, args.out or os.path.join(run.root, "report"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
