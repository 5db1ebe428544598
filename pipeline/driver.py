"""GiGPO rounds: setup -> warm start -> baseline -> (collect -> advantage -> train -> evaluate -> commit) x N.

    python pipeline/round.py --config configs/local.yaml [key.path=value ...] [--rounds N]
    dask-submit [--scheduler tcp://host:8786] pipeline/round.py --config configs/local.yaml
    gigpo-round --config configs/local.yaml          # installed: the same driver
    python pipeline/round.py --config CFG --plan [--plan-workers N --plan-gpu-memory 80GiB]  # pipeline.plan

Before round 0 (as round -1, see ``pipeline.stages.warm_start``): optional expert
demonstrations and SFT of the base model on them, or a fork of another run's
round (``pipeline.stages.fork``), then a held-out evaluation of the starting
policy. Round r collects with round r-1's committed checkpoint (round 0: the
starting policy; the KL reference is ``trainer.reference``; with ``overlap: 1``
round r+1 is collected with round r-1's checkpoint while round r trains), computes GiGPO
advantages, trains, evaluates the new checkpoint on held-out tasks and commits
its metrics. Every stage is committed by a
manifest; a rerun (after a crash, or with a larger ``--rounds``) skips what
is committed and redoes the rest from scratch; so does a rerun after Ctrl-C,
which stops the driver, names the round and stage it was in and keeps
what is committed. Temporary files live in a folder of the driver's own,
removed at exit; a rerun removes those its killed processes left
(``pipeline.runtime.scratch``). Exit codes: 0 done, 2 bad config or a run_dir
that is not a run, 3 the run is locked by another driver, 1 a stage failed,
130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import contextlib
import sys

import storage
from pipeline.config import ConfigError, config_hash, hash_index, load, to_dict
from pipeline.records import (ADVANTAGES_STAGE, CHECKPOINT_STAGE, EVALUATION_STAGE, METRICS_STAGE, TRAJECTORIES_STAGE,
                              RoundMetrics)
from pipeline.run_config import RunConfig
from pipeline.runtime.alongside import alongside
from pipeline.runtime.clock import StageClock
from pipeline.runtime.console import bars_shown, quiet_library_bars, stamped_console
from pipeline.runtime.cluster import connect
from pipeline.runtime.interrupt import INTERRUPTED, interrupted
from pipeline.runtime.live import fig
from pipeline.runtime.loggers import Trackers
from pipeline.runtime.scratch import run_tmpdir
from pipeline.stages.advantage import advantage
from pipeline.stages.collect import collect
from pipeline.stages.derived import complete_derived
from pipeline.stages.evaluate import evaluate
from pipeline.stages.metrics import commit_round_metrics
from pipeline.stages.retention import prune
from pipeline.stages.setup import (base_model, check_cluster, check_paths, policy_for, prepare_games, reference_policy,
                                   round_tasks)
from pipeline.stages.train import train
from pipeline.stages.warm_start import WARM_ROUND, derived_sections, evaluate_before, warm_start

# The config section whose hash each stage's manifest records.
STAGE_SECTIONS = {TRAJECTORIES_STAGE: "rollout", ADVANTAGES_STAGE: "advantage", CHECKPOINT_STAGE: "trainer",
                  EVALUATION_STAGE: "evaluation"}


def kept_with_other_config(run: storage.Run, r: int, cfg: RunConfig) -> list[str]:
    """Committed stages of round ``r`` made with another config section than ``cfg``'s (kept, not redone)."""
    return [stage for stage, section in STAGE_SECTIONS.items()
            if (m := run.manifest(r, stage)) is not None and m.config_hash != config_hash(getattr(cfg, section))]


def run_round(r: int, cfg: RunConfig, run: storage.Run, client, games, held_out, start: str, ref: str | None,
              trackers: Trackers) -> None:
    """One round, as a recipe; each stage is a no-op when already committed."""
    clock = StageClock(run, r)
    for stage in kept_with_other_config(run, r, cfg):
        print(f"warning: round {r}: the committed {stage!r} stage was made with another "
              f"{STAGE_SECTIONS[stage]!r} config; it is kept as it is", file=sys.stderr, flush=True)
    collect_round(r, cfg, run, client, games, start, clock)
    with clock("advantage", done=run.is_committed(r, ADVANTAGES_STAGE)):
        advantage(client, run, r, cfg.advantage, progress=bars_shown(cfg.rollout.progress))
    ahead = (r + 1, cfg, run, client, games, start, StageClock(run, r + 1))
    with alongside(collect_round, *ahead) if cfg.overlap and r + 1 < cfg.rounds else contextlib.nullcontext():
        with clock("train", done=run.is_committed(r, CHECKPOINT_STAGE)):
            train(client, run, r, policy_for(run, r, start), ref, cfg.trainer, cfg.cluster, on_step=trackers.step)
    if cfg.evaluation.after(r, cfg.rounds):
        with clock("evaluate", done=run.is_committed(r, EVALUATION_STAGE)):
            evaluate(client, run, r, run.stage_dir(r, CHECKPOINT_STAGE), held_out, cfg.rollout, cfg.evaluation)
    metrics = commit_round_metrics(client, run, r, clock.seconds, config_hash(cfg))
    prune(run, cfg.trainer)
    trackers.catch_up()
    print(round_line(metrics), flush=True)


def collect_round(r: int, cfg: RunConfig, run: storage.Run, client, games, start: str, clock: StageClock) -> None:
    """Collect round ``r`` with policy version ``r - cfg.overlap`` (round v-1's checkpoint; 0: ``start``)."""
    version = max(r - cfg.overlap, 0)
    with clock("collect", done=run.is_committed(r, TRAJECTORIES_STAGE)):
        tasks = round_tasks(games, r, cfg.tasks_per_round, cfg.games.seed)
        collect(client, run, r, policy_for(run, version, start), tasks, cfg.rollout, policy_version=version)


def round_line(m: RoundMetrics) -> str:
    """The driver's line for a committed round.

    >>> round_line(RoundMetrics(round=2, policy_version=2, success_rate=0.5, loss=0.01, stage_seconds={"train": 3.0}))
    'round 2: success 0.500, held-out -, anchored share 0.000, loss 0.01, kl -, grad norm -, stage seconds train 3.0'
    """
    return (f"round {m.round}: success {m.success_rate:.3f}, held-out {fig(m.eval_success_rate)}, anchored share "
            f"{m.anchored_share:.3f}, loss {fig(m.loss)}, kl {fig(m.kl)}, grad norm {fig(m.grad_norm)}, stage seconds "
            + ", ".join(f"{k} {v:.1f}" for k, v in m.stage_seconds.items()))


def save_resolved_config(run: storage.Run, cfg: RunConfig) -> str | None:
    """Save ``cfg`` unless saved, so every manifest's config_hash resolves, round -1's derived settings included."""
    derived = derived_sections(cfg)
    return storage.save_config(run, to_dict(cfg), hash_index(cfg) | {k: config_hash(v) for k, v in derived.items()},
                               {k: to_dict(v) for k, v in derived.items()})


def rounds_to_run(run: storage.Run, total: int) -> list[int]:
    """Rounds below ``total`` whose metrics are not committed yet (in order)."""
    return [r for r in range(total) if not run.is_committed(r, METRICS_STAGE)]


def drive(run: storage.Run, cfg: RunConfig, client, todo: list[int], trackers: Trackers) -> None:
    """Games, base model, warm start (or fork), baseline, then the rounds ``todo``."""
    print("setup: games (generated on the workers, once) ...", flush=True)
    games, held_out = prepare_games(cfg.games, run, client)
    print(f"setup: {len(games)} training and {len(held_out)} held-out games; base model ...", flush=True)
    base = base_model(cfg, run)
    trackers.start()
    start = warm_start(client, run, cfg, games, base, on_step=trackers.step)
    evaluate_before(client, run, cfg, held_out, start)
    trackers.catch_up()
    ref = reference_policy(cfg.trainer.reference, base, start)
    for r in todo:
        run_round(r, cfg, run, client, games, held_out, start, ref, trackers)


def main(argv: list[str] | None = None, prog: str = "pipeline/round.py") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--plan" in argv:  # what the config would do, on the described cluster: nothing is started
        from pipeline.plan import main as plan

        return plan([a.replace("--plan-", "--", 1) for a in argv if a != "--plan"])
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML run config (default: built-in defaults)")
    ap.add_argument("--rounds", type=int, help="total rounds of the run (overrides the config's rounds)")
    ap.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    args = ap.parse_intermixed_args(argv)  # --rounds may come between overrides
    try:
        cfg = load(RunConfig, args.config,
                   args.overrides + ([f"rounds={args.rounds}"] if args.rounds is not None else []))
        check_paths(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if not bars_shown(cfg.rollout.progress):
        quiet_library_bars()
    run = storage.open_run(cfg.run_dir)
    try:
        with run.claim(), run_tmpdir(run.uri), stamped_console(), \
                Trackers(cfg.logging, run, to_dict(cfg)) as trackers:
            complete_derived(run, trackers)
            todo = rounds_to_run(run, cfg.rounds)
            if not todo and (cfg.rounds or run.is_committed(WARM_ROUND, METRICS_STAGE)):
                print(f"{cfg.run_dir}: all {cfg.rounds} round(s) are committed; nothing to do")
                return 0
            save_resolved_config(run, cfg)
            with connect(cfg.cluster) as client:
                check_cluster(client, cfg)
                drive(run, cfg, client, todo, trackers)
            print(f"done: metrics in {run.root}/metrics.jsonl; figures: python -m pipeline.report {cfg.run_dir}",
                  flush=True)
    except ConfigError as exc:  # the cluster cannot run the config (train ranks vs batch sizes): nothing done
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except storage.ForeignDirectory as exc:  # files that are not the project's: left as they are
        print(f"error: run_dir: {exc}", file=sys.stderr)
        return 2
    except storage.RunLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except storage.StorageError as exc:  # a bad manifest or file, an unwritable run: named, nothing committed
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the stages are stopped (the cluster with them), the committed ones kept
        print(interrupted(StageClock.current), file=sys.stderr, flush=True)
        return INTERRUPTED
    return 0


def cli() -> int:
    """The ``gigpo-round`` console script."""
    return main(prog="gigpo-round")
