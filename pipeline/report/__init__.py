"""``python -m pipeline.report RUN``: PNG figures and a Markdown summary of a run, to diagnose it.

Writes into ``RUN/report`` (or ``--out``) the figures of ``FIGURES`` (``sft.png``
only when the run has a warm start with SFT steps) and ``summary.md``, which
lists them and tables held-out success with episode counts and Wilson 95%
intervals, success per task type, and each round's headline numbers. Round -1,
shown as "warm start", is what precedes round 0: the expert's demonstrations,
the SFT steps and the held-out baseline of the starting policy.
"""
from __future__ import annotations

import argparse
import os
import sys

import storage
from pipeline.report import curves, hist, outcomes
from pipeline.report.draw import save
from pipeline.report.sources import ReportData, load
from pipeline.report.summary import markdown, summary

HIST_ROUNDS = 6  # advantage histograms: at most this many rounds (first, last and spread between)

# file -> (builder returning (figure, series drawn), what it shows)
FIGURES = {
    "success.png": (outcomes.success, "success per round: training tasks (line), held-out at evaluated rounds "
                    "(Wilson 95% bars, won/episodes), the expert's demonstrations (star)"),
    "progress.png": (outcomes.progress, "training and held-out success against cumulative env steps and "
                     "cumulative wall time"),
    "tasks.png": (outcomes.tasks, "success and mean episode length per task type: training episodes per round, "
                  "held-out at evaluated rounds"),
    "training.png": (curves.training, "RL trainer metrics per optimizer step (loss, KL, entropy, grad norm, "
                     "clip fraction, learning rate), round boundaries dotted"),
    "sft.png": (curves.sft, "the warm start's SFT metrics per optimizer step (loss, entropy, grad norm, "
                "learning rate)"),
    "collect.png": (curves.collect, "format errors, refused commands and response length per round"),
    "anchors.png": (curves.anchors, "anchored share, anchor purity against the true state, mean |A_E| and "
                    "|A_S| per round"),
    "advantages.png": (hist.advantages, f"histograms of A_E, A_S (shared anchor groups), the advantage and the "
                       f"steps' anchor-group sizes, per round (at most {HIST_ROUNDS} rounds)"),
    "stage_times.png": (curves.stage_times, "wall time of each stage per round"),
}


def _wanted(name: str, data: ReportData) -> bool:
    return name != "sft.png" or any(data.steps.get(r) for r in data.rounds if r < 0)


def write_report(run: storage.Run, out_dir: str) -> list[str]:
    """Write the figures and ``summary.md`` for every round with committed metrics; the files written."""
    data = load(run, HIST_ROUNDS)
    os.makedirs(out_dir, exist_ok=True)
    shown = {name: what for name, (_, what) in FIGURES.items() if _wanted(name, data)}
    for name in shown:
        fig, _ = FIGURES[name][0](data)
        save(fig, os.path.join(out_dir, name))
    with open(os.path.join(out_dir, "summary.md"), "w") as fh:
        fh.write(markdown(run.uri, data, shown))
    return [os.path.join(out_dir, name) for name in [*shown, "summary.md"]]


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


__all__ = ["FIGURES", "main", "summary", "write_report"]
