"""The round's advantage job over committed steps shards, on one machine or a Dask cluster.

Each output partition is one input shard's step keys (``round, episode_id,
step``) and advantage columns, in the shard's row order (the ``advantages``
table of ``storage.schemas``), handed to ``sink("advantages", table, index,
source_path)`` where the task runs (a Dask worker); each partition's anchor
groups go the same way (``"anchor_groups"``), so the driver gathers only the
per-group ``anchor_stats`` and memory stays bounded by a partition. The round
driver passes storage's shard writer. Only the scalar columns are read; the
token columns are never read, copied or rewritten (``run.scan("advantages")``
joins them back from steps).

- Shards hold whole groups (what rollout workers write): one task per shard.
- A group spans shards: rows are bucketed by ``group_id`` (scalar columns
  only), each bucket is computed, and each shard's results are joined back on
  its row numbers.

``groups_whole=None`` runs one task per shard and falls back to the shuffle
when that shows a split group (two shards report one ``group_id``, or a shard
holds part of an episode); the fallback rewrites every partition under the same
names. ``True`` trusts the writer and raises on a split group; ``False`` forces
the shuffle. Every path runs the same ``compute_advantages`` on whole groups,
so all give bit-identical numbers.
"""
from __future__ import annotations

import itertools
import operator
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
from tqdm.auto import tqdm

from storage.schemas import ADVANTAGES
from storage.shards import num_rows, read_schema, read_table

from pipeline.advantage.config import AdvantageConfig
from pipeline.advantage.engine import scalar_columns, compute_advantages
from pipeline.advantage.stats import STATS_COLUMNS, anchor_tables
from pipeline.advantage.validate import AdvantageInputError

Sink = Callable[[str, pa.Table, int, str], Any]  # (table name, table, partition index, source shard path)
_STATS_EXTRA = ("round", "task_id", "won", "observation", "state_key")


@dataclass(frozen=True)
class JobResult:
    """What the job produced: sink results per partition, the per-group table, and timing."""

    outputs: list  # sink's return value for each input shard's advantages, in input order
    group_outputs: list  # sink's return value for each partition's anchor_groups (sorted by group_id, anchor_id)
    anchor_stats: pl.DataFrame  # one row per (round, group_id), storage.schemas.ANCHOR_STATS columns
    shuffled: bool  # True when groups spanned shards and rows were bucketed by group_id
    rows: int  # steps processed
    seconds: float  # wall time of the job
    cores: int  # worker threads that ran it

    def summary(self) -> str:
        """One line with the physical-limit figure (steps/s per core), to 3 significant digits.

        >>> JobResult([], [], None, False, 176, 0.04, 2).summary()
        '176 steps in 0.04 s on 2 core(s), one task per shard: 2.2 k steps/s/core'
        """
        rate = self.rows / max(self.seconds, 1e-9) / max(self.cores, 1)
        mode = "group_id shuffle" if self.shuffled else "one task per shard"
        return f"{self.rows} steps in {self.seconds:.2f} s on {self.cores} core(s), {mode}: {_si(rate)} steps/s/core"


def _si(x: float) -> str:
    """``x`` to 3 significant digits with a k/M/G prefix: ``_si(2_200)`` is '2.2 k'."""
    for scale, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{prefix}"
    return f"{x:.3g}"


class _Inline:
    """Runs tasks in this process as they are submitted (one shard in memory at a time)."""

    is_async = False
    cores = 1

    def submit(self, fn, *args):
        return fn(*args)

    def gather(self, items):
        return list(items)

    def settle(self, items):
        """Nothing to wait for: each task ran (or raised) when submitted."""


class _Dask:
    def __init__(self, client, key: str) -> None:
        self.client, self.key, self.count = client, key, itertools.count()
        self.is_async = True
        self.cores = sum(client.nthreads().values())

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, key=f"{self.key}-{fn.__name__.strip('_')}-{next(self.count)}")

    def gather(self, items):
        return self.client.gather(list(items))

    def settle(self, items):
        """Wait until every task has finished or failed (no task is left writing)."""
        from distributed import wait

        wait(list(items))


def run_advantage_job(
    paths: Sequence[str],
    sink: Sink,
    cfg: AdvantageConfig | None = None,
    *,
    client=None,
    groups_whole: bool | None = None,
    progress: bool = True,
    filesystem=None,
    key: str | None = None,
) -> JobResult:
    """Compute advantages for the steps shards ``paths`` and hand each annotated shard to ``sink``.

    ``client``: a ``distributed.Client`` (None runs in this process);
    ``filesystem``: the pyarrow filesystem of ``paths`` (None: local paths);
    ``key``: the start of the tasks' Dask keys (``pipeline.runtime.keys``; default: fresh ones).

    >>> def sink(table, index, source):  # doctest: +SKIP
    ...     pq.write_table(table, f"out/advantages-{index}.parquet")
    ...     return table.num_rows
    >>> run_advantage_job(["steps-0.parquet", "steps-1.parquet"], sink, client=client).outputs  # doctest: +SKIP
    [4096, 3912]
    """
    cfg = cfg or AdvantageConfig()
    ex = _Dask(client, key or f"advantage-{uuid.uuid4().hex[:8]}") if client is not None else _Inline()
    start = time.perf_counter()
    paths = [str(p) for p in paths]
    if not paths:
        return JobResult([], [], pl.DataFrame(schema=STATS_COLUMNS), False, 0, 0.0, ex.cores)
    shuffled = groups_whole is False
    done = None if shuffled else _per_shard(ex, paths, cfg, sink, progress, filesystem, strict=groups_whole is True)
    if done is None:
        shuffled, done = True, _shuffled(ex, paths, cfg, sink, progress, filesystem)
    outputs, groups, stats = done
    rows = int(stats["steps"].sum())
    result = JobResult(outputs, groups, stats, shuffled, rows, time.perf_counter() - start, ex.cores)
    if progress:
        print(result.summary())
    return result


def _per_shard(ex, paths: list[str], cfg: AdvantageConfig, sink: Sink, progress: bool, fs, strict: bool):
    """One task per shard, then the check that no group was in two shards (the writer's promise).

    A broken promise raises when ``strict``, else gives None (saying why when ``progress``); either way once
    no task is left writing.
    """
    try:
        done = _stage(ex, _shard_task, [(p, i, cfg, sink, fs) for i, p in enumerate(paths)], "advantages", progress)
        ex.settle(done)
        results = ex.gather(done)
    except AdvantageInputError as err:  # e.g. a shard holding part of an episode
        if not strict:
            return _redo(f"a shard task failed ({err}); if a group spans shards, the shuffle fixes that", progress)
        raise AdvantageInputError(f"{err} (with groups_whole=True: if groups span shards, use None)") from err
    stats = pl.concat([r[2] for r in results]).sort("round", "group_id")
    dup = stats.filter(pl.struct("round", "group_id").is_duplicated())["group_id"].unique().sort()
    if len(dup):
        if not strict:
            return _redo(f"group_id(s) {dup.to_list()[:10]} span several shards", progress)
        raise AdvantageInputError(
            f"groups_whole=True but group_id(s) {dup.to_list()[:10]} span several shards; "
            "the written partitions are wrong: rerun with groups_whole=None"
        )
    return [r[0] for r in results], [r[1] for r in results], stats


def _redo(why: str, progress: bool) -> None:
    if progress:
        print(f"{why}: redoing the stage with a group_id shuffle")


def _stage(ex, fn, arg_lists: list[tuple], desc: str, progress: bool) -> list:
    futures = [ex.submit(fn, *args) for args in tqdm(arg_lists, desc=desc, disable=not progress or ex.is_async)]
    if ex.is_async and progress:
        from distributed import as_completed

        for _ in tqdm(as_completed(futures), total=len(futures), desc=desc):
            pass
    return futures


def read_scalars(path: str, cfg: AdvantageConfig, fs=None) -> pl.DataFrame:
    """The shard's scalar columns the engine and the statistics read (missing ones are reported by the engine)."""
    names = read_schema(fs, path).names
    wanted = scalar_columns(names, cfg) + list(_STATS_EXTRA)
    return pl.from_arrow(read_table(fs, path, [c for c in dict.fromkeys(wanted) if c in names]))


def slim(result: pl.DataFrame) -> pa.Table:
    """The stored ``advantages`` table of a result: step keys and advantage columns, in its row order."""
    return result.select(ADVANTAGES.names).to_arrow().cast(ADVANTAGES)


def _tables(result: pl.DataFrame, index: int, source: str, sink: Sink):
    """Write a partition's anchor groups where it was computed; the sink's return value and its anchor stats."""
    stats, groups = anchor_tables(result)
    return sink("anchor_groups", groups.to_arrow(), index, source), stats


def _shard_task(path: str, index: int, cfg: AdvantageConfig, sink: Sink, fs):
    result = compute_advantages(read_scalars(path, cfg, fs=fs), cfg)
    return sink("advantages", slim(result), index, path), *_tables(result, index, path, sink)


def _split_task(path: str, index: int, cfg: AdvantageConfig, parts: int, fs) -> list[pl.DataFrame]:
    frame = read_scalars(path, cfg, fs=fs)
    bucket = np.mod(frame["group_id"].to_numpy(), parts)
    frame = frame.with_columns(
        pl.lit(index, pl.Int32).alias("_shard"), pl.int_range(len(frame), dtype=pl.Int64).alias("_row"), _bucket=bucket
    )
    pieces = frame.partition_by("_bucket", as_dict=True, include_key=False)
    return [pieces.get((b,), frame.clear().drop("_bucket")) for b in range(parts)]


def _bucket_task(pieces: list[pl.DataFrame], index: int, cfg: AdvantageConfig, n_shards: int, sink: Sink):
    result = compute_advantages(pl.concat(pieces), cfg)
    per_shard = result.select("_shard", "_row", *ADVANTAGES.names).partition_by("_shard", as_dict=True)
    empty = result.clear().select("_row", *ADVANTAGES.names)
    shards = [per_shard[(i,)].drop("_shard") if (i,) in per_shard else empty for i in range(n_shards)]
    return shards, *_tables(result, index, f"group_id bucket {index}", sink)


def _write_task(path: str, index: int, pieces: list[pl.DataFrame], sink: Sink, fs):
    result, rows = pl.concat(pieces).sort("_row"), num_rows(fs, path)
    if not np.array_equal(result["_row"].to_numpy(), np.arange(rows)):
        raise RuntimeError(f"{path}: got advantages for {len(result)} of {rows} rows after the shuffle")
    return sink("advantages", slim(result), index, path)


def _shuffled(ex, paths: list[str], cfg: AdvantageConfig, sink: Sink, progress: bool, fs):
    n = len(paths)
    split = _stage(ex, _split_task, [(p, i, cfg, n, fs) for i, p in enumerate(paths)], "split by group_id", progress)
    buckets = [ex.submit(_bucket_task, [ex.submit(operator.getitem, s, b) for s in split], b, cfg, n, sink)
               for b in range(n)]
    shard_parts = [ex.submit(operator.getitem, b, 0) for b in buckets]
    args = [
        (p, i, [ex.submit(operator.getitem, part, i) for part in shard_parts], sink, fs) for i, p in enumerate(paths)
    ]
    outputs = ex.gather(_stage(ex, _write_task, args, "advantages", progress))
    groups = ex.gather([ex.submit(operator.getitem, b, 1) for b in buckets])
    stats = ex.gather([ex.submit(operator.getitem, b, 2) for b in buckets])
    return outputs, groups, pl.concat(stats).sort("round", "group_id")
