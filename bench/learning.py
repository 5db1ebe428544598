"""Paired learning benchmark: arms that share one warm start, its training games and its held-out set.

    python -m bench.learning --config configs/local.yaml --arms gigpo grpo step_only --seeds 0 1 2 --rounds 6

1. ``OUT/warm`` runs the config with ``--rounds 0``: games, the warm start (expert
   demonstrations + SFT) and the held-out baseline of the starting policy.
2. Each arm-seed run ``OUT/<arm>-s<seed>`` starts as a copy of ``OUT/warm`` (its
   committed round -1, games and base model), so every arm starts from the same
   policy and is evaluated on the same held-out games; then it runs ``--rounds R``
   with the arm's overrides and ``rollout.sampling.seed`` / ``trainer.seed`` = seed.
3. ``OUT/learning.md`` tabulates held-out success per round per arm (mean and 95%
   CI over seeds, Student t) and the paired final difference of the first arm and
   each other arm with its 95% CI; then the same for the training-task success of
   rounds 1..R-1 (5 x 128 episodes per arm-seed instead of 128; paired because a
   seed's arms play the same tasks). Then, per round, the training-task success
   and the anchor statistics (``ANCHOR_KEYS``: does the step-level signal grow
   over the rounds?), and the wall seconds of each arm's RL rounds.
   ``OUT/learning.png`` draws the curves.

Every run directory is resumable: a rerun of the same command skips committed
rounds, so a stopped benchmark loses at most the round in flight. With
``--records DIR`` a finished arm-seed's metrics are also kept in DIR, a folder
committed with the project (``bench/records.py``): a rerun on another machine
runs only the arm-seeds DIR has no record of, once its warm start proves to be the
recorded one; ``--pin-avx2`` gives every run the float kernels that machines with
and without AVX-512 share, so that it can.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import records as rec
from pipeline.config import load
from pipeline.run_config import RunConfig
from storage.shards import build_folder

ROOT = Path(__file__).resolve().parents[1]
# Arm name -> config overrides.
ARMS: dict[str, list[str]] = {
    "gigpo": ["advantage.estimator=gigpo"],
    "grpo": ["advantage.estimator=grpo"],
    "step_only": ["advantage.estimator=step_only"],
    "rloo": ["advantage.estimator=rloo"],
    "ppo": ["advantage.estimator=ppo"],
    "gigpo_overlap": ["advantage.estimator=gigpo", "overlap=1", "trainer.old_logprobs=rollout"],
    "gigpo_state": ["advantage.estimator=gigpo", "advantage.anchor=state"],
    "gigpo_composite": ["advantage.estimator=gigpo", "advantage.anchor=composite"],
}
# Round records that describe the anchor groups and the step-level signal (docs/data-dictionary.md).
ANCHOR_KEYS = ("anchored_share", "anchor_groups_per_group", "impure_step_share", "states_per_anchor_group",
               "mean_abs_adv_step")
# Two-sided 95% Student t quantiles by degrees of freedom (beyond 30: the normal 1.96).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    """The 95% two-sided t quantile for ``dof`` degrees of freedom (the nearest tabulated one below).

    >>> t95(2), t95(12), t95(100)
    (4.303, 2.228, 1.96)
    """
    if dof > 30:
        return 1.96
    return T95[max(k for k in T95 if k <= dof)]


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width (Student t; 0 for one value).

    >>> mean_ci([0.2, 0.4, 0.6])
    (0.4, 0.4969)
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return round(mean, 4), 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return round(mean, 4), round(t95(n - 1) * sd / math.sqrt(n), 4)


def driver(config: str, run_dir: Path, rounds: int, overrides: list[str], kernels: dict[str, str]) -> None:
    """Run (or resume) ``pipeline/round.py`` on one run directory with ``kernels`` set; raise if it fails."""
    cmd = [sys.executable, str(ROOT / "pipeline" / "round.py"), "--config", config, "--rounds", str(rounds),
           f"run_dir={run_dir}", *overrides]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=os.environ | kernels)


def fork(warm: Path, dest: Path) -> None:
    """Start ``dest`` as a copy of the warm run: round -1, the games and the base model (not its lock)."""
    if dest.exists():
        return
    build_folder(str(dest), lambda tmp: shutil.copytree(
        warm, tmp, ignore=shutil.ignore_patterns("_LOCK", "tensorboard", "metrics.jsonl"), dirs_exist_ok=True))


def metric(path: Path, key: str) -> dict[int, float]:
    """Round -> ``key`` of a run's metrics file, where recorded (round -1: the starting policy)."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["round"]: r[key] for r in records if r.get(key) is not None}


def rl_wall(path: Path, rounds: int) -> dict[str, float]:
    """Seconds of the stages of RL rounds 0..rounds-1, once all are committed."""
    stages = metric(path, "stage_seconds")
    if any(r not in stages for r in range(rounds)):
        return {}
    return {"RL rounds": sum(sum(stages[r].values()) for r in range(rounds))}


def trained(curve: dict[int, float], rounds: int) -> dict[str, float]:
    """Mean training-task success of rounds 1..rounds-1 (collected by the policies RL made), once all are in.

    Round 0 collects with the warm start, the same in every arm. For one seed,
    every arm plays the same tasks with the same sampling seeds in a round.

    >>> trained({0: 0.2, 1: 0.3, 2: 0.5}, 3), trained({0: 0.2, 1: 0.3}, 3)
    ({'rounds 1-2': 0.4}, {})
    """
    later = range(1, rounds)
    if rounds < 2 or any(r not in curve for r in later):
        return {}
    return {f"rounds 1-{rounds - 1}": sum(curve[r] for r in later) / len(later)}


def table(curves: dict[str, dict[int, dict]], rounds: list) -> list[str]:
    """Markdown rows: one per row key that has values (a round, -1 as 'start'), one 'mean ± CI (n)' cell per arm.

    >>> print("\\n".join(table({"a": {0: {-1: 0.1, 1: 0.2}, 1: {-1: 0.1, 1: 0.4}}, "b": {0: {-1: 0.1}}}, [-1, 0, 1])))
    | round | a | b |
    |---|---|---|
    | start | 0.100 ± 0.000 (n=2) | 0.100 (n=1) |
    | 1 | 0.300 ± 1.271 (n=2) |  |
    """
    arms = list(curves)
    lines = ["| round | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for r in rounds:
        cells = [_cell([c[r] for c in curves[arm].values() if r in c]) for arm in arms]
        if any(cells):
            lines.append(f"| {'start' if r == -1 else r} | " + " | ".join(cells) + " |")
    return lines


def _cell(vals: list[float]) -> str:
    if len(vals) < 2:
        return "%.3f (n=1)" % vals[0] if vals else ""
    return "%.3f ± %.3f (n=%d)" % (*mean_ci(vals), len(vals))


def paired(curves: dict[str, dict[int, dict]], a: str, b: str, at, what: str = "final difference") -> str:
    """The paired difference ``a - b`` at ``at`` (a round, or a key of ``trained``) over the seeds both have.

    >>> c = {"a": {0: {5: 0.3}, 1: {5: 0.4}}, "b": {0: {5: 0.2}, 1: {5: 0.3}}}
    >>> paired(c, "a", "b", 5)
    'paired final difference a - b (round 5, seeds [0, 1]): +0.100 in every seed: no spread, so no CI'
    >>> c["a"][1][5] = 0.5
    >>> paired(c, "a", "b", 5)
    'paired final difference a - b (round 5, seeds [0, 1]): +0.150 ± 0.635 (95% CI; includes 0: no difference shown)'
    """
    seeds = [s for s in curves[a] if at in curves[a][s] and at in curves.get(b, {}).get(s, {})]
    where = f"round {at}" if isinstance(at, int) else at
    if not seeds:
        return f"no seed has {where} in both {a} and {b} yet"
    diffs = [curves[a][s][at] - curves[b][s][at] for s in seeds]
    mean, ci = mean_ci(diffs)
    if len(seeds) < 2:
        return f"{what} {a} - {b} ({where}, seed {seeds[0]} only): {mean:+.3f}, no CI from one seed"
    head = f"paired {what} {a} - {b} ({where}, seeds {seeds}): {mean:+.3f}"
    if max(diffs) - min(diffs) < 1e-12:  # equal differences: a zero-width t interval says nothing
        return f"{head} in every seed: no spread, so no CI"
    verdict = "includes 0: no difference shown" if abs(mean) <= ci else "excludes 0"
    return f"{head} ± {ci:.3f} (95% CI; {verdict})"


def plot(curves: dict[str, dict[int, dict[int, float]]], rounds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, seeds in curves.items():
        xs, ms, cs = [], [], []
        for r in rounds:
            vals = [c[r] for c in seeds.values() if r in c]
            if vals:
                m, ci = mean_ci(vals)
                xs.append(r), ms.append(m), cs.append(ci)
        ax.errorbar(xs, ms, yerr=cs, marker="o", capsize=3, label=arm)
    ax.set_xlabel("round (-1: warm start, before RL)")
    ax.set_ylabel("held-out success (mean, 95% CI over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_all(args: argparse.Namespace, out: Path, records: Path | None, kernels: dict[str, str]) -> None:
    """The warm start, then every arm-seed run that ``records`` holds no record of."""
    setting = rec.setting_hash(args.config, args.overrides) if records else ""
    if records:
        rec.check_setting(records, setting, kernels)
    driver(args.config, out / "warm", 0, args.overrides, kernels)
    if records:
        rec.check_warm(records, setting, kernels, out / "warm")
    for seed in args.seeds:  # seed-major: an early stop still leaves complete pairs
        for arm in args.arms:
            run_dir = out / f"{arm}-s{seed}"
            if records and rec.record_path(records, run_dir.name).exists():
                print(f"{run_dir.name}: recorded in {records}, skipped", flush=True)
                continue
            fork(out / "warm", run_dir)
            driver(args.config, run_dir, args.rounds,
                   [*args.overrides, *ARMS[arm], f"rollout.sampling.seed={seed}", f"trainer.seed={seed}"], kernels)
            if records:
                rec.keep(run_dir, records)


def collect_label(config: str, overrides: list[str]) -> str:
    """How each round plays its training tasks, for the report's headings.

    >>> collect_label("configs/local.yaml", ["rollout.sampling.temperature=0.7", "trainer.temperature=0.7"])
    "each round's 128 collect episodes, T=0.7"
    """
    cfg = load(RunConfig, config, overrides)
    return (f"each round's {cfg.tasks_per_round * cfg.rollout.group_size} collect episodes, "
            f"T={cfg.rollout.sampling.temperature:g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.learning", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/local.yaml")
    ap.add_argument("--arms", nargs="+", default=["gigpo", "grpo", "step_only"], choices=sorted(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=6, help="RL rounds of every arm-seed run")
    ap.add_argument("--out", default="bench/out/learning", help="folder of the run directories and the report")
    ap.add_argument("--report-only", action="store_true", help="write the report from what has finished")
    ap.add_argument("--records", help="committed folder of finished runs (bench/records.py): skip and add to it")
    ap.add_argument("--pin-avx2", action="store_true", help="run with the float kernels AVX2 and AVX-512 CPUs share")
    ap.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides for every run")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    records = Path(args.records).resolve() if args.records else None
    start = time.perf_counter()
    if not args.report_only:
        run_all(args, out, records, rec.AVX2_KERNELS if args.pin_avx2 else {})

    def by_arm_seed(read) -> dict[str, dict[int, dict]]:
        return {arm: {s: read(rec.metrics_file(out, records, f"{arm}-s{s}")) for s in args.seeds} for arm in args.arms}

    curves = by_arm_seed(lambda run: metric(run, "eval_success_rate"))
    train = by_arm_seed(lambda run: trained(metric(run, "success_rate"), args.rounds))
    per_round = {key: by_arm_seed(lambda run, key=key: metric(run, key)) for key in ("success_rate", *ANCHOR_KEYS)}
    wall = by_arm_seed(lambda run: rl_wall(run, args.rounds))
    rounds, span = list(range(-1, args.rounds)), f"rounds 1-{args.rounds - 1}"
    setting = ", ".join([args.config, *args.overrides])
    lines = [f"# Learning benchmark: held-out success by round ({setting})", "",
             *([rec.describe(records), ""] if records else []),
             *table(curves, rounds), "",
             *(paired(curves, args.arms[0], other, args.rounds - 1) for other in args.arms[1:]), "",
             f"## Training-task success, mean of {span} ({collect_label(args.config, args.overrides)})", "",
             *table(train, [span]), "",
             *(paired(train, args.arms[0], other, span, "difference") for other in args.arms[1:]), "",
             "## Training-task success by round", "", *table(per_round["success_rate"], rounds[1:]), "",
             *(line for key in ANCHOR_KEYS
               for line in (f"## `{key}` by round", "", *table(per_round[key], rounds[1:]), "")),
             "## Wall seconds of the RL rounds per arm-seed (stages summed)", "", *table(wall, ["RL rounds"]),
             *([] if args.report_only else ["", f"wall time of this invocation: {time.perf_counter() - start:.0f} s"])]
    (out / "learning.md").write_text("\n".join(lines) + "\n")
    plot(curves, rounds, out / "learning.png")
    print("\n".join(lines))
    print(f"wrote {out / 'learning.md'} and {out / 'learning.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
