"""``python -m pipeline.report RUN``: PNG plots and a Markdown summary of a run.

Writes ``RUN/report/success.png`` (train and held-out success per round),
``anchors.png`` (anchor coverage and mean |A_E|, |A_S| per round),
``purity.png`` (anchored share and anchor purity against the true state per round),
``stage_times.png`` (stage-time breakdown per round) and ``summary.md``.
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
from pipeline.stages.record import RoundMetrics, read_metrics  # noqa: E402

STAGES = ("demos", "warm_start", "collect", "advantage", "train", "evaluate")


def _ticks(ax, rounds: list[int]) -> None:
    ax.set_xticks(rounds, ["before" if r < 0 else str(r) for r in rounds])


def _plot(path: str, title: str, rounds: list[int], series: dict[str, list], ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in series.items():
        pts = [(r, v) for r, v in zip(rounds, values) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    _ticks(ax, rounds)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stage_times(path: str, records: list[RoundMetrics]) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0.0] * len(records)
    rounds = [m.round for m in records]
    for stage in STAGES:
        secs = [m.stage_seconds.get(stage, 0.0) for m in records]
        ax.bar(rounds, secs, bottom=bottom, label=stage)
        bottom = [b + s for b, s in zip(bottom, secs)]
    ax.set(title="stage time per round", xlabel="round", ylabel="seconds")
    _ticks(ax, rounds)
    ax.legend()
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
    names = ("success.png", "anchors.png", "purity.png", "stage_times.png", "summary.md")
    files = [os.path.join(out_dir, n) for n in names]
    _plot(files[0], "success rate", rounds, {"collect (train tasks)": [m.success_rate for m in records],
                                             "held-out": [m.eval_success_rate for m in records]}, "share won")
    _plot(files[1], "anchor coverage", rounds, {"steps in shared anchor groups": [m.anchored_share for m in records],
                                                "mean |A_E|": [m.mean_abs_adv_episode for m in records],
                                                "mean |A_S|": [m.mean_abs_adv_step for m in records]}, "value")
    _plot(files[2], "anchor purity (true state)", rounds, {
        "steps in shared anchor groups": [m.anchored_share for m in records],
        "shared anchor groups of one state": [m.anchor_pure_share for m in records],
        "steps in impure anchor groups": [m.impure_step_share for m in records],
        "revisits left in singletons": [m.missed_revisit_share for m in records]}, "share")
    _stage_times(files[3], records)
    with open(files[4], "w") as fh:
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
