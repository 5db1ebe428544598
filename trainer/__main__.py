"""``python -m trainer``: one rank of a training round (the ``deepspeed`` launcher runs one per GPU).

Rank and rendezvous come from the environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``); without them it is a 1-rank run.
Torch's CPU threads: ``--threads``, else ``trainer.num_threads``, else every core the
process may use (an inherited ``OMP_NUM_THREADS`` is not followed).

    python -m trainer --policy ckpt/r0 --data 'runs/x/rounds/000000/advantages/*.parquet' \\
        --out ckpt/r1 --set kl_coef=0 --set lr=1e-6
    deepspeed --num_gpus 8 --module trainer --run runs/x --round 3 --policy ckpt/r3 --ref ckpt/r0

With ``--live`` rank 0 prints each optimizer step's metrics as one JSON line
(``trainer.step_metrics.live_record``) as the step ends, and a note at each start-up
phase's end (imports; rows read, model loaded and DeepSpeed engine built; round-start
log-probs); the train stage forwards them to the driver.
With ``--serve`` (and ``--run``) the rank stays up after ``--round`` and trains each round requested on its
input, one JSON line each, keeping its engine in memory between them (``trainer.resident``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

from pipeline.config import ConfigError, apply_overrides, from_dict, read_yaml
from trainer.config import TrainerConfig

STARTED = time.monotonic()  # about the process's start, for the start-up notes


def parse_config(path: str | None, overrides: list[str]) -> TrainerConfig:
    """YAML file (its ``trainer:`` section if present) plus ``key=value`` overrides."""
    data = read_yaml(path) if path else {}
    return from_dict(TrainerConfig, apply_overrides(data.get("trainer", data), overrides), "trainer")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="HF checkpoint directory of the current policy")
    p.add_argument("--ref", help="HF checkpoint of the frozen reference policy (KL loss)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", nargs="+", help="advantage Parquet file(s) or glob(s)")
    src.add_argument("--run", help="run directory / URI; with --round, commits the checkpoint stage")
    p.add_argument("--round", type=int, help="round of --run to train on")
    p.add_argument("--out", help="output checkpoint directory (with --data)")
    p.add_argument("--state-dir", help="DeepSpeed state directory for resume (with --data)")
    p.add_argument("--config", help="YAML file with trainer fields (or a trainer: section)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--metrics", help="write per-step metrics as JSON lines here (rank 0)")
    p.add_argument("--live", action="store_true",
                   help="print each optimizer step's metrics as a JSON line (rank 0; with --run), no progress bar")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: trainer.num_threads)")
    p.add_argument("--serve", action="store_true",
                   help="with --run: then train each round requested on stdin (JSON: round, policy, ref) in turn")
    args = p.parse_args(argv)
    try:
        cfg = parse_config(args.config, args.set)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from trainer.host import set_threads

    set_threads(args.threads or cfg.num_threads)
    if args.serve and args.run is None:
        p.error("--serve needs --run")
    if args.run is not None:
        if args.round is None:
            p.error("--run needs --round")
        import storage

        from trainer.rounds import train_from_run

        note = _print_note if args.live else None
        if note:
            note(f"imports done in {time.monotonic() - STARTED:.1f} s")
        run, on_step, progress = storage.open_run(args.run), _print_step if args.live else None, not args.live
        if args.serve:
            first = {"round": args.round, "policy": args.policy, "ref": args.ref}
            _serve(run, first, lambda: parse_config(args.config, args.set), on_step, note, progress)
            result = None
        else:
            result = train_from_run(run, args.round, cfg, args.policy, ref_path=args.ref, on_step=on_step,
                                    on_note=note, progress=progress)
    else:
        if not args.out:
            p.error("--data needs --out")
        import polars as pl

        from trainer.updates import train_round

        result = train_round(cfg, args.policy, pl.scan_parquet(args.data), args.out, ref_path=args.ref,
                             state_dir=args.state_dir)
    _finish(result, args.metrics)
    return 0


def _serve(run, first: dict, load_config, on_step, on_note, progress: bool) -> None:
    """Train ``first``, then each round requested on stdin, on one resident engine; answer each on stdout."""
    from trainer.protocol import ROUND_PREFIX
    from trainer.resident import Resident, release_cached_memory
    from trainer.rounds import train_from_run

    resident = Resident()
    for req in itertools.chain([first], map(json.loads, sys.stdin)):
        result = train_from_run(run, req["round"], load_config(), req["policy"], ref_path=req["ref"],
                                on_step=on_step, on_note=on_note, progress=progress, resident=resident)
        release_cached_memory()
        print(ROUND_PREFIX + json.dumps({"round": req["round"], "steps": result.steps if result else 0}), flush=True)


def _print_step(step: int, total: int, metrics: dict) -> None:
    import torch.distributed as dist

    from trainer.step_metrics import live_record

    if not dist.is_initialized() or dist.get_rank() == 0:  # metrics are reduced over ranks: rank 0 has them all
        print(live_record(step, total, metrics), flush=True)


def _print_note(text: str) -> None:
    from trainer.protocol import NOTE_PREFIX

    rank = os.environ.get("RANK", "0")  # set before the process group exists
    if rank == "0":
        print(f"{NOTE_PREFIX}rank {rank}: {text}", flush=True)


def _finish(result, metrics_path: str | None) -> None:
    import torch.distributed as dist

    from trainer.deepspeed_engine import shutdown_distributed

    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and metrics_path and result is not None:
        with open(metrics_path, "w") as f:
            for m in result.metrics:
                f.write(json.dumps(m) + "\n")
    shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
