"""Command-line view of a run: ``python -m storage show|verify|demo RUN``.

    python -m storage show runs/demo                        # rounds, stages, rows, sizes
    python -m storage show runs/demo --table steps --round 0 # schema and head of a table
    python -m storage verify runs/demo                      # checksums of every committed file
    python -m storage demo runs/demo --groups 64            # write and commit a synthetic round
"""
from __future__ import annotations

import argparse
import sys
import time

import polars as pl
from tqdm import tqdm

import storage
from storage.synthetic import synthetic_round


def overview(run: storage.Run) -> pl.DataFrame:
    """One row per (round, stage, table) with rows, bytes and file counts."""
    rows = []
    for r in run.rounds():
        for stage, m in run.stages(r).items():
            for table in m.tables() or [None]:
                files = [f for f in m.files if f.table == table]
                rows.append({"round": r, "stage": stage, "policy": m.policy_version, "table": table or "(files)",
                             "rows": m.rows(table) if table else None, "MB": round(sum(f.bytes for f in files) / 1e6, 3),
                             "files": len(files), "committed": m.created_at})
    return pl.DataFrame(rows, schema={"round": pl.Int64, "stage": pl.String, "policy": pl.Int64, "table": pl.String,
                                      "rows": pl.Int64, "MB": pl.Float64, "files": pl.Int64, "committed": pl.String})


def show(args: argparse.Namespace) -> None:
    run = storage.open_run(args.run)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=160):
        if args.table is None:
            print(f"run {run.uri}: {len(run.rounds())} committed round(s)")
            print(overview(run))
            return
        frame = run.scan(args.table, rounds=None if args.round is None else [args.round])
        print(f"{args.table}: {frame.collect_schema()}")
        print(frame.head(args.head).collect())


def verify(args: argparse.Namespace) -> None:
    count = storage.open_run(args.run).verify()
    print(f"{count} committed file(s) match their manifests")


def demo(args: argparse.Namespace) -> None:
    """Write a synthetic round shard by shard, commit it, and show the run."""
    run = storage.open_run(args.run)
    with run.lock():
        if run.is_committed(args.round, "trajectories"):
            print(f"round {args.round} is already committed: nothing to do")
        else:
            run.begin(args.round, "trajectories")
            infos, start = [], time.perf_counter()
            for s in tqdm(range(args.shards), desc="write shards", unit="shard"):
                steps, episodes = synthetic_round(args.round, args.groups, seed=s, first_group=s * args.groups)
                infos += [storage.write_shard(run, args.round, "steps", steps, f"s{s:04d}"),
                          storage.write_shard(run, args.round, "episodes", episodes, f"s{s:04d}")]
            run.commit(args.round, "trajectories", infos, config_hash="demo", policy_version=0)
            secs = time.perf_counter() - start
            print(f"generated and wrote {sum(i.bytes for i in infos) / 1e6:.1f} MB, {sum(i.rows for i in infos if i.table == 'steps'):,} "
                  f"steps in {secs:.2f} s ({sum(i.bytes for i in infos) / 1e6 / secs:.1f} MB/s)")
    show(argparse.Namespace(run=args.run, table=None))
    stats = run.scan("episodes").group_by("round").agg(pl.len().alias("episodes"), pl.col("won").mean().alias("success"))
    print(stats.collect())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="list rounds and stages, or print a table's schema and head")
    p.add_argument("run")
    p.add_argument("--table", choices=sorted(storage.TABLES))
    p.add_argument("--round", type=int)
    p.add_argument("--head", type=int, default=5)
    p.set_defaults(func=show)
    p = sub.add_parser("verify", help="check every committed file against its manifest (checksums)")
    p.add_argument("run")
    p.set_defaults(func=verify)
    p = sub.add_parser("demo", help="write and commit a synthetic round")
    p.add_argument("run")
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--groups", type=int, default=256, help="episode groups per shard (8 episodes each)")
    p.add_argument("--shards", type=int, default=4)
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except storage.StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
