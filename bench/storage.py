"""Storage benchmark: write and scan N step rows through the run directory vs plain pyarrow.

    python -m bench.storage --rows 10_000_000 --shard-rows 1_000_000

Prints MB/s written, rows/s read with a projection, and our time over plain
``pyarrow.parquet`` on the same tables (same codec), the overhead of our layer
(validation, SHA-256, page checksums, atomic rename, footer checks). Medians of --repeat runs.

Integrity at read, and the choice it rests on: ``run.scan`` verifies page
CRC-32s as it reads (through pyarrow: Polars' reader skips them); the line
"integrity" compares it with the alternatives: pyarrow on the same files
without checking, and hashing each file's SHA-256 before a plain Polars scan.
"checkpoint check" is the SHA-256 rate a process pays before loading a
committed checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time

import polars as pl
import pyarrow.parquet as pq

import storage
from storage.shards import COMPRESSION
from storage.synthetic import synthetic_round

SCALARS = ["group_id", "episode_id", "step", "anchor_key", "reward", "action_valid"]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sha256_files(paths: list[str]) -> None:
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as src:
            while chunk := src.read(8 << 20):
                digest.update(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--shard-rows", type=int, default=1_000_000)
    ap.add_argument("--prompt-tokens", type=int, default=128, help="mean prompt length (tokens)")
    ap.add_argument("--response-tokens", type=int, default=24, help="mean response length (tokens)")
    ap.add_argument("--repeat", type=int, default=5, help="read repetitions (median reported)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-storage-")
    run = storage.open_run(f"{tmp}/run")
    groups = max(1, args.shard_rows // (8 * 27))  # 27.5 steps per episode on average
    ours, plain, infos, plain_paths, rows, nbytes, g0 = [], [], [], [], 0, 0, 0
    while rows < args.rows:
        steps, _ = synthetic_round(0, groups, prompt_tokens=args.prompt_tokens,
                                   response_tokens=args.response_tokens, seed=len(infos), first_group=g0)
        g0 += groups
        tbl = steps.to_arrow()
        shard = f"s{len(infos):04d}"
        plain_paths.append(f"{tmp}/plain-{shard}.parquet")

        def write_ours():
            return ours.append(_timed(lambda: infos.append(storage.write_shard(run, 0, "steps", tbl, shard))))

        def write_plain():
            return plain.append(_timed(lambda: pq.write_table(tbl, plain_paths[-1], compression=COMPRESSION)))

        # alternate: fair under noise
        for write in (write_ours, write_plain) if len(infos) % 2 else (write_plain, write_ours):
            write()
        rows += tbl.num_rows
        nbytes += infos[-1].bytes
    run.commit(0, "trajectories", infos, "bench", 0)
    print(f"{rows:,} step rows in {len(infos)} shards, {nbytes / 1e6:,.0f} MB on disk "
          f"(prompt ~{args.prompt_tokens}, response ~{args.response_tokens} tokens)")
    print(f"write: ours {nbytes / 1e6 / sum(ours):,.0f} MB/s, plain pyarrow {nbytes / 1e6 / sum(plain):,.0f} MB/s, "
          f"ours/plain time: median per shard {statistics.median(o / p for o, p in zip(ours, plain)):.3f}, "
          f"total {sum(ours) / sum(plain):.3f}")
    for label, cols in [("scalar projection", SCALARS),
                        ("trainer projection", ["prompt_ids", "response_ids", "response_logprobs"])]:
        readers = {"ours": lambda: run.scan("steps").select(cols).collect(),
                   "polars": lambda: pl.scan_parquet(plain_paths).select(cols).collect(),
                   "pyarrow": lambda: pq.read_table(plain_paths, columns=cols)}
        times = {k: [] for k in readers}
        for _ in range(args.repeat):  # interleaved, so noise from other processes hits all three alike
            for name, read in readers.items():
                times[name].append(_timed(read))
        t_ours, t_pl, t_pa = (statistics.median(times[k]) for k in readers)
        print(f"read {label}: ours {rows / t_ours / 1e6:,.1f} M rows/s, "
              f"plain polars {rows / t_pl / 1e6:,.1f} M rows/s, "
              f"plain pyarrow {rows / t_pa / 1e6:,.1f} M rows/s; ours/plain-polars time {t_ours / t_pl:.3f}, "
              f"ours/plain-pyarrow {t_ours / t_pa:.3f}")
        ours_paths = run.shard_paths("steps", 0)
        checks = {"crc": lambda: pq.read_table(ours_paths, columns=cols, page_checksum_verification=True),
                  "none": lambda: pq.read_table(ours_paths, columns=cols),
                  "polars": lambda: pl.scan_parquet(ours_paths).select(cols).collect(),
                  "sha": lambda: (_sha256_files(ours_paths), pl.scan_parquet(ours_paths).select(cols).collect())}
        times = {k: [] for k in checks}
        for _ in range(args.repeat):
            for name, read in checks.items():
                times[name].append(_timed(read))
        t_crc, t_none, t_pl, t_sha = (statistics.median(times[k]) for k in checks)
        print(f"integrity, {label}: pyarrow checking page CRCs {t_crc:.3f} s, unchecked {t_none:.3f} s "
              f"(x{t_crc / t_none:.3f}); SHA-256 of each file + polars {t_sha:.3f} s, polars alone {t_pl:.3f} s "
              f"(x{t_sha / t_pl:.3f})")
    t_verify = _timed(run.verify)
    t_hash = _timed(lambda: _sha256_files(plain_paths))
    print(f"full checksum verify (threads): {nbytes / 1e6 / t_verify:,.0f} MB/s; checkpoint check (SHA-256, "
          f"one thread): {nbytes / 1e6 / t_hash:,.0f} MB/s = {1e3 / (nbytes / 1e6 / t_hash):.2f} s per GB")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
