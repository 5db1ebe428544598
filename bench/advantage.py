"""Advantage-engine benchmark: steps/s per core, peak memory, ratio to per-row Python, Dask 2 vs 1 workers.

    python -m bench.advantage --rows 1_000_000 10_000_000

For each size: ALFWorld-shaped scalar rows (groups of 8 episodes of 5-50 steps,
all episodes of a group start from one state, 6 states per later step index so
anchors repeat) are generated in memory and ``compute_advantages`` is timed on
them as rollout workers write them (sorted by group/episode/step) and shuffled.
steps/s/core divides by the CPU time of the process (all threads), so it is a
per-core figure whatever the thread count. Peak memory is the RSS high-water
mark above the pre-call baseline, sampled every 2 ms. The per-row Python
reference (pipeline/advantage/naive.py, a linear dict-based version of
verl-agent's loops) runs on a subsample of whole groups in the same run; its
rate and the engine's are compared, and the two results are checked to agree.

The Dask figure runs the full advantage stage of a round (read the scalar
columns of committed steps shards that carry token columns, compute, write the
slim advantages table through storage.write_shard, anchor stats and groups,
commit) on ``--dask-rows`` rows from storage.synthetic, on LocalClusters of 1
and 2 single-threaded workers started as the driver starts them (Polars held to
the worker's thread): a first run (workers' first calls), then the median of 3
(as every later round runs it); and splits one shard's time into
read/compute/statistics/write, with the I/O floor of that shard: its read plus
the cheapest Parquet writes of both tables (uncompressed, page checksums,
SHA-256), the most any engine could reach while storing those tables.

``--out-of-core N`` writes N rows as 1 M-row scalar shards to a temporary
directory and runs the job in this process one shard at a time (memory
bounded by a shard, e.g. ``--rows 1000000 --dask-rows 0 --out-of-core 100_000_000``).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import os
import shutil
import tempfile
import threading
import time

import numpy as np
import polars as pl
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipeline.advantage import AdvantageConfig, compute_advantages
from pipeline.advantage.dask_job import read_scalars, run_advantage_job, slim
from pipeline.advantage.naive import naive_advantages
from pipeline.advantage.stats import anchor_tables
from pipeline.stages.advantage import StorageSink, advantage
from storage.shards import conform, dictionary_columns


def alfworld_rows(n_rows: int, seed: int = 0, first_group: int = 0) -> pl.DataFrame:
    """About ``n_rows`` step rows (whole groups of 8, ids from ``first_group``), scalar columns only."""
    rng = np.random.default_rng(seed)
    n_eps = max(8, int(n_rows / 27.5) // 8 * 8)
    lengths = rng.integers(5, 51, size=n_eps)
    n = int(lengths.sum())
    episode = np.repeat(np.arange(n_eps), lengths)
    step = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    episode += first_group * 8
    group = episode // 8
    won = np.repeat(rng.random(n_eps) < 0.4, lengths)
    last = np.zeros(n, dtype=bool)
    last[np.cumsum(lengths) - 1] = True
    state = np.where(step == 0, 0, rng.integers(0, 6, size=n))
    u64 = np.uint64
    anchor = (group.astype(u64) << u64(32)) | (step.astype(u64) << u64(8)) | state.astype(u64)
    return pl.DataFrame({
        "group_id": group.astype(np.int64),
        "episode_id": episode.astype(np.int64),
        "step": step.astype(np.int32),
        "reward": np.where(last & won, 10.0, 0.0).astype(np.float32),
        "anchor_key": anchor,
        "action_valid": rng.random(n) > 0.05,
    })


class PeakRSS:
    """Context manager: highest RSS above the entry baseline, sampled by a thread."""

    def __enter__(self):
        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.base = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss - self.base)


def timed(fn, repeat: int = 1) -> tuple[float, float, object]:
    """Best (wall, cpu) seconds over ``repeat`` calls, and the last result."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, out


def bench_engine(rows: int, sub_rows: int, cfg: AdvantageConfig) -> None:
    steps = alfworld_rows(rows)
    n, mb = steps.height, steps.estimated_size() / 2**20
    compute_advantages(steps.head(50_000), cfg)  # warm-up
    with PeakRSS() as mem:
        wall, cpu, out = timed(lambda: compute_advantages(steps, cfg), repeat=3)
    shuffled = steps.sample(fraction=1.0, shuffle=True, seed=1)
    s_wall, s_cpu, s_out = timed(functools.partial(compute_advantages, shuffled, cfg))  # no closure: freed below
    keys = ["episode_id", "step"]
    assert s_out.sort(keys).equals(out.sort(keys)), "shuffled input changed the result"
    del shuffled, s_out

    sub = steps.filter(pl.col("group_id") < sub_rows // 220)  # group ids run 0, 1, ...; ~220 rows per group
    _, n_cpu, ref = timed(lambda: naive_advantages(sub, cfg))
    _, e_cpu, mine = timed(lambda: compute_advantages(sub, cfg), repeat=3)
    diff = max(float(np.max(np.abs(mine[c].to_numpy() - np.asarray(ref[c])))) for c in ("advantage", "adv_step"))
    naive_rate = sub.height / n_cpu
    print(f"\n== {n:,} rows ({mb:,.0f} MiB of scalar columns), exact anchors, {cfg.estimator}/{cfg.norm} ==")
    print(f"  sorted input:   {n / cpu / 1e6:6.2f} M steps/s/core (cpu {cpu:.2f} s), "
          f"{n / wall / 1e6:6.2f} M steps/s wall")
    print(f"  shuffled input: {n / s_cpu / 1e6:6.2f} M steps/s/core, {n / s_wall / 1e6:6.2f} M steps/s wall")
    print(f"  peak RSS above baseline during compute: {mem.peak / 2**20:,.0f} MiB ({mem.peak / n:.0f} B/row)")
    print(f"  per-row Python on {sub.height:,} rows: {naive_rate / 1e3:,.0f} k steps/s/core; engine "
          f"{n / cpu / naive_rate:,.0f}x faster per core at this size, {sub.height / e_cpu / naive_rate:,.0f}x on the "
          f"same rows (max |diff| {diff:.1e})")


def bench_dask(rows: int, shard_rows: int, cfg: AdvantageConfig, repeats: int = 3) -> None:
    import storage
    from pipeline.run_config import ClusterConfig
    from pipeline.runtime.cluster import connect
    from storage.synthetic import synthetic_round

    tmp = tempfile.mkdtemp(prefix="bench-advantage-")
    try:
        run = storage.open_run(f"{tmp}/run")
        groups, infos, total = max(1, shard_rows // 220), [], 0
        while total < rows:
            steps, _ = synthetic_round(0, groups, seed=len(infos), first_group=len(infos) * groups)
            infos.append(storage.write_shard(run, 0, "steps", steps, f"s{len(infos):04d}"))
            total += steps.height
        run.commit(0, "trajectories", infos, "bench", 0)
        paths = run.shard_paths("steps", 0)
        print(f"\n== Dask round job: {total:,} rows with token columns in {len(paths)} shards ==")
        rates = {}
        os.environ.pop("DASK_SCHEDULER_ADDRESS", None)  # LocalClusters of 1 and 2 workers, not the user's cluster
        for workers in (1, 2):
            with connect(ClusterConfig(n_workers=workers, threads_per_worker=1)) as client:  # the driver's cluster
                # workers that have imported the stage's modules, as a round's collect leaves them (~1-2 s each)
                client.run(lambda: importlib.import_module("pipeline.stages.advantage") is not None)
                runs = [stage_once(run, cfg, client) for _ in range(1 + repeats)]
                (first, _, _), (wall, cpu, result) = runs[0], sorted(runs[1:], key=lambda r: r[0])[repeats // 2]
                rates[workers] = result.rows / wall
                print(f"  {workers} worker(s), median of {repeats} after a first run of {first:.2f} s: "
                      f"{result.summary()}; whole stage with commit {wall:.2f} s: "
                      f"{result.rows / wall / workers / 1e6:.2f} M steps/s/core (wall), "
                      f"{result.rows / cpu / 1e6:.2f} M steps per CPU-second (workers + driver, {cpu:.2f} s)")
        print(f"  2 workers vs 1: {rates[2] / rates[1]:.2f}x  (this machine has {psutil.cpu_count()} cores, shared)")
        read, _, scalars = timed(lambda: read_scalars(paths[0], cfg), repeat=3)
        compute, _, result = timed(lambda: compute_advantages(scalars, cfg), repeat=3)
        tables, _, (_, group_table) = timed(lambda: anchor_tables(result), repeat=3)
        run.begin(0, "advantages", overwrite=True)
        sink = StorageSink(run, 0)
        write, _, _ = timed(lambda: sink("advantages", slim(result), 0, paths[0]), repeat=3)
        write_groups, _, _ = timed(lambda: sink("anchor_groups", group_table.to_arrow(), 0, paths[0]), repeat=3)
        print(f"  one shard of {scalars.height:,} rows (Polars on {pl.thread_pool_size()} threads here, 1 in a "
              f"worker): read scalars {read:.3f} s, compute {compute:.3f} s, anchor stats + groups {tables:.3f} s, "
              f"slim storage write {write:.3f} s, anchor groups write {write_groups:.3f} s")
        floor = sum(cheapest_write(t) for t in (slim(result), conform(group_table, "anchor_groups", "bench")))
        print(f"  I/O floor of that shard: its read plus the cheapest Parquet writes of both tables (uncompressed, "
              f"page checksums, SHA-256) {read + floor:.3f} s: at most {scalars.height / (read + floor) / 1e6:.2f} M "
              "steps/s/core with a free engine and free anchor tables")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cheapest_write(table) -> float:
    """Seconds of the fastest of two uncompressed Parquet encodings of ``table`` (dictionaries as storage uses
    them, or none), each with page checksums and the SHA-256 the manifest records; best of 3."""
    def write(dictionary) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="none", use_dictionary=dictionary, write_page_checksum=True)
        hashlib.sha256(sink.getvalue()).hexdigest()

    return min(timed(functools.partial(write, d), repeat=3)[0] for d in (dictionary_columns(table.schema), False))


def stage_once(run, cfg: AdvantageConfig, client) -> tuple[float, float, object]:
    """(wall, CPU of workers + driver, JobResult) of one advantage stage of round 0, redone from scratch."""
    run.begin(0, "advantages", overwrite=True)
    cpu, wall = cpu_seconds(client), time.perf_counter()
    result = advantage(client, run, 0, cfg, progress=False)
    return time.perf_counter() - wall, cpu_seconds(client) - cpu, result


def cpu_seconds(client) -> float:
    """CPU seconds used so far by this process and the cluster's worker processes (user + system)."""
    workers = client.run(lambda: sum(psutil.Process().cpu_times()[:2]))
    return sum(workers.values()) + time.process_time()


def bench_out_of_core(rows: int, shard_rows: int, cfg: AdvantageConfig) -> None:
    """Shards of scalar columns on disk, processed one at a time in this process: memory bounded by a shard."""
    tmp = tempfile.mkdtemp(prefix="bench-advantage-ooc-")
    try:
        paths, total, first = [], 0, 0
        with tqdm(total=rows, desc="writing steps shards", unit="row", unit_scale=True) as bar:
            while total < rows:
                shard = alfworld_rows(shard_rows, seed=len(paths), first_group=first)
                first = int(shard["group_id"].max()) + 1
                shard = shard.with_columns(
                    pl.lit(0, pl.Int32).alias("round"), pl.format("task-{}", "group_id").alias("task_id"),
                    pl.format("You arrive at loc {}.", pl.col("anchor_key") % 256).alias("observation"),
                )
                paths.append(f"{tmp}/steps-{len(paths):05d}.parquet")
                shard.write_parquet(paths[-1])
                total += shard.height
                bar.update(shard.height)
        sink = PlainSink(tmp)
        with PeakRSS() as mem:
            wall, cpu, result = timed(lambda: run_advantage_job(paths, sink, cfg, groups_whole=True, progress=True))
        print(f"\n== out of core: {total:,} rows in {len(paths)} shards, one shard in memory at a time ==")
        print(f"  {total / wall / 1e6:.2f} M steps/s wall, {total / cpu / 1e6:.2f} M steps/s/core "
              "incl. Parquet read+write; "
              f"peak RSS above baseline {mem.peak / 2**20:,.0f} MiB; {result.anchor_stats.height:,} groups")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class PlainSink:
    """Writes a partition's table as plain Parquet next to the inputs."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __call__(self, name, table, index, source):
        pq.write_table(table, f"{self.directory}/{name}-{index:05d}.parquet")
        return table.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000], help="engine sizes (none: skip)")
    ap.add_argument("--sub-rows", type=int, default=50_000, help="rows of the per-row Python subsample")
    ap.add_argument("--dask-rows", type=int, default=2_000_000, help="rows of the Dask round job (0: skip)")
    ap.add_argument("--shard-rows", type=int, default=250_000, help="rows per steps shard for the Dask job")
    ap.add_argument("--out-of-core", type=int, default=0, help="rows of the on-disk, shard-at-a-time run (0: skip)")
    args = ap.parse_args()
    cfg = AdvantageConfig()
    for rows in args.rows:
        bench_engine(rows, args.sub_rows, cfg)
    if args.dask_rows:
        bench_dask(args.dask_rows, args.shard_rows, cfg)
    if args.out_of_core:
        bench_out_of_core(args.out_of_core, 1_000_000, cfg)


if __name__ == "__main__":
    main()
