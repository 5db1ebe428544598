"""Command-line view of a run: ``python -m storage show|verify|uncommit|config|demo RUN``.

    python -m storage show runs/local                        # rounds, stages, rows, sizes; flags missing files
    python -m storage show runs/local --table steps --round 0 --columns episode_id,reward  # schema and head
    python -m storage verify runs/local                      # checksums of every committed file, every bad one listed
    python -m storage uncommit runs/local --round 1 --stage advantages --stage metrics  # the next run redoes them
    python -m storage config runs/local 3f2a9c0d1e4b5a67    # the config values a manifest's config_hash stands for
    python -m storage demo runs/synthetic --groups 64        # write and commit a synthetic round

Exit codes: 0 fine, 1 a bad file or manifest (each named on stderr) or an unknown config hash,
2 bad usage or a path that holds no run.
"""
from __future__ import annotations

import argparse
import sys
import time

import polars as pl
import yaml
from tqdm import tqdm

import storage
from storage.synthetic import synthetic_round


NAMING = ("round r: the r-th collect/train cycle (-1: the warm start or fork, and the baseline before round 0); "
          "policy v (policy_version): the checkpoint that sampled the rows, v = r in round r (r-1 with overlap: 1; "
          "-1: the expert's demonstrations); a checkpoint stage's v is the version it made")


def overview(run: storage.Run, bad: dict[str, str]) -> pl.DataFrame:
    """One row per (round, stage, table) with rows, bytes, file counts and ``bad`` files (paths in ``bad``)."""
    rows = []
    for r in run.rounds():
        for stage in run.stage_names(r):
            try:
                m = run.manifest(r, stage)
            except storage.CorruptManifest:
                rows.append({"round": r, "stage": stage, "table": "(unreadable manifest)", "bad": 1})
                continue
            for table in [] if m is None else m.tables() or [None]:
                files = [f for f in m.files if f.table == table]
                rows.append({"round": r, "stage": stage, "policy": m.policy_version, "table": table or "(files)",
                             "rows": m.rows(table) if table else None,
                             "MB": round(sum(f.bytes for f in files) / 1e6, 3), "files": len(files),
                             "bad": sum(f"{run.stage_dir(r, stage)}/{f.path}" in bad for f in files),
                             "retired": sum(f.table == table for f in m.retired), "committed": m.created_at})
    return pl.DataFrame(rows, schema={"round": pl.Int64, "stage": pl.String, "policy": pl.Int64, "table": pl.String,
                                      "rows": pl.Int64, "MB": pl.Float64, "files": pl.Int64, "bad": pl.Int64,
                                      "retired": pl.Int64, "committed": pl.String})


def _report(bad: dict[str, str]) -> int:
    for problem in bad.values():
        print(f"error: {problem}", file=sys.stderr)
    return 1 if bad else 0


def show(args: argparse.Namespace) -> int:
    run = storage.open_existing_run(args.run)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=160):
        if args.table is None:
            _, bad = run.audit()  # cheap: every file present with its size
            print(f"run {run.uri}: {len(run.rounds())} committed round(s)"
                  + (f", {len(bad)} bad file(s) or manifest(s) (`bad` column, listed on stderr)" if bad else ""))
            print(NAMING)
            print(overview(run, bad))
            return _report(bad)
        frame = run.scan(args.table, rounds=None if args.round is None else [args.round])
        if args.columns:
            names = args.columns.split(",")
            unknown = [c for c in names if c not in storage.TABLES[args.table].names]
            if unknown:
                print(f"error: --columns: table {args.table!r} has no column {unknown[0]!r}; "
                      f"expected some of {storage.TABLES[args.table].names}", file=sys.stderr)
                return 2
            frame = frame.select(names)
        print(f"{args.table}: {frame.collect_schema()}")
        print(frame.head(args.head).collect())
    return 0


def verify(args: argparse.Namespace) -> int:
    count, bad = storage.open_existing_run(args.run).audit(full=True)
    if bad:
        print(f"{len(bad)} bad file(s) or manifest(s) among {count} committed file(s)")
        return _report(bad)
    print(f"{count} committed file(s) match their manifests")
    return 0


def uncommit(args: argparse.Namespace) -> int:
    """Remove stages (manifest first, then files), even with an unreadable manifest; the next run redoes them."""
    run = storage.open_existing_run(args.run)
    with run.lock(check=False):
        for stage in args.stage:
            if stage not in run.stage_names(args.round):
                print(f"round {args.round} has no {stage!r} stage: nothing to uncommit")
                continue
            run.begin(args.round, stage, overwrite=True)
            print(f"uncommitted round {args.round} {stage!r}: {run.stage_dir(args.round, stage)} is empty")
    return 0


def config(args: argparse.Namespace) -> int:
    """Print the saved config values a manifest's ``config_hash`` stands for (the whole config or one section)."""
    found = storage.find_config(storage.open_existing_run(args.run), args.hash)
    if not found:
        print(f"error: {args.run}: no saved config has hash {args.hash!r} (configs are saved in "
              f"{args.run}/configs/ by each driver start)", file=sys.stderr)
        return 1
    path, section, values = found[0]
    where = ", ".join(p for p, _, _ in found)
    print(f"# {args.hash}: " + (f"the {section!r} section" if section else "the whole config") + f" of {where}")
    print(yaml.safe_dump(values if section is None else {section: values}, sort_keys=False), end="")
    return 0


def demo(args: argparse.Namespace) -> int:
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
            print(f"generated and wrote {sum(i.bytes for i in infos) / 1e6:.1f} MB, "
                  f"{sum(i.rows for i in infos if i.table == 'steps'):,} "
                  f"steps in {secs:.2f} s ({sum(i.bytes for i in infos) / 1e6 / secs:.1f} MB/s)")
    code = show(argparse.Namespace(run=args.run, table=None))
    stats = run.scan("episodes").group_by("round").agg(pl.len().alias("episodes"),
                                                      pl.col("won").mean().alias("success"))
    print(stats.collect())
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="list rounds and stages, or print a table's schema and head")
    p.add_argument("run")
    p.add_argument("--table", choices=sorted(storage.TABLES))
    p.add_argument("--round", type=int)
    p.add_argument("--head", type=int, default=5)
    p.add_argument("--columns", help="with --table: comma-separated columns to show (default: all)")
    p.set_defaults(func=show)
    p = sub.add_parser("verify", help="check every committed file against its manifest (checksums), list every bad one")
    p.add_argument("run")
    p.set_defaults(func=verify)
    p = sub.add_parser("uncommit", help="remove committed stages of a round (a bad file or manifest): reruns redo them")
    p.add_argument("run")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--stage", action="append", required=True, help="stage to remove (repeat for several)")
    p.set_defaults(func=uncommit)
    p = sub.add_parser("config", help="print the saved config values a manifest's config_hash stands for")
    p.add_argument("run")
    p.add_argument("hash", help="a config_hash from a manifest (the whole config's or a section's)")
    p.set_defaults(func=config)
    p = sub.add_parser("demo", help="write and commit a synthetic round")
    p.add_argument("run")
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--groups", type=int, default=256, help="episode groups per shard (8 episodes each)")
    p.add_argument("--shards", type=int, default=4)
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    if getattr(args, "columns", None) and args.table is None:
        parser.error("show: --columns needs --table")
    try:
        return args.func(args)
    except storage.NotARun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except storage.StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
