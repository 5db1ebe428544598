"""The run directory: rounds, stages, commits and the Polars read API.

Layout (any pyarrow/fsspec filesystem)::

    RUN/_LOCK
    RUN/rounds/000003/trajectories/steps/<shard>.parquet
    RUN/rounds/000003/trajectories/episodes/<shard>.parquet
    RUN/rounds/000003/trajectories/_MANIFEST.json     <- written last: the commit
    RUN/rounds/000003/advantages/...
    RUN/rounds/000003/checkpoint/...                   <- HF checkpoint files

Files that no committed manifest names do not exist for readers.

>>> import tempfile, storage
>>> run = storage.open_run(tempfile.mkdtemp())
>>> run.rounds()
[]
"""
from __future__ import annotations

import re
import time
from typing import Any, Iterable

import polars as pl
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from storage import shards
from storage.errors import SchemaMismatch, StageCommitted, StageNotCommitted
from storage.lock import LOCK_NAME, RunLock
from storage.manifest import MANIFEST_NAME, Manifest, ShardInfo
from storage.schemas import TABLE_STAGE, TABLES
from storage.uri import is_local, resolve

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{kind} name {name!r}: use letters, digits, '_', '-', '.', '=' (no '/')")
    return name


class Run:
    """A run directory on a local disk or any pyarrow/fsspec filesystem."""

    def __init__(self, uri: str, filesystem: Any = None):
        self.uri, self._filesystem = uri, filesystem
        self.fs, self.root = resolve(uri, filesystem)

    def __reduce__(self):  # ship the URI to Dask workers, not open handles
        return (Run, (self.uri, self._filesystem))

    def __repr__(self) -> str:
        return f"Run({self.uri!r})"

    # -- layout -------------------------------------------------------------
    def stage_dir(self, round: int, stage: str) -> str:
        """Directory of one stage of one round (stage files live under it)."""
        return f"{self.root}/rounds/{int(round):06d}/{_check_name('stage', stage)}"

    def lock(self) -> RunLock:
        """``with run.lock():`` makes this process the run's only writer."""
        return RunLock(self.fs, self.root)

    # -- commits ------------------------------------------------------------
    def manifest(self, round: int, stage: str) -> Manifest | None:
        """The stage's manifest, or None when the stage is not committed."""
        path = f"{self.stage_dir(round, stage)}/{MANIFEST_NAME}"
        try:
            with self.fs.open_input_stream(path) as src:
                return Manifest.from_json(src.read().decode(), where=path)
        except FileNotFoundError:
            return None

    def is_committed(self, round: int, stage: str) -> bool:
        return self.fs.get_file_info(f"{self.stage_dir(round, stage)}/{MANIFEST_NAME}").type == pafs.FileType.File

    def begin(self, round: int, stage: str, overwrite: bool = False) -> None:
        """Start (or restart) a stage: remove a crashed attempt's leftovers.

        A committed stage is refused unless ``overwrite``; then it is
        uncommitted first (manifest removed), so a crash mid-way leaves no
        half-old, half-new stage.
        """
        folder = self.stage_dir(round, stage)
        if self.is_committed(round, stage):
            if not overwrite:
                raise StageCommitted(f"{folder}: stage {stage!r} of round {round} is committed; "
                                     "pass overwrite=True to redo it")
            self.fs.delete_file(f"{folder}/{MANIFEST_NAME}")
        if self.fs.get_file_info(folder).type == pafs.FileType.Directory:
            self.fs.delete_dir_contents(folder)

    def commit(self, round: int, stage: str, shards_: Iterable[ShardInfo], config_hash: str,
               policy_version: int) -> Manifest:
        """Commit a stage by writing its manifest last; the same commit again is a no-op."""
        files = sorted(shards_, key=lambda s: s.path)
        folder = self.stage_dir(round, stage)
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise ValueError(f"{folder}: shard list names a file twice: {sorted({p for p in paths if paths.count(p) > 1})}")
        new = Manifest(round=int(round), stage=stage, policy_version=int(policy_version),
                       config_hash=config_hash, files=files, created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        old = self.manifest(round, stage)
        if old is not None:
            if old == new:
                return old
            raise StageCommitted(f"{folder}: stage {stage!r} of round {round} is already committed "
                                 "with other files or config; call begin(..., overwrite=True) to redo it")
        for f in files:
            shards.verify(self.fs, folder, f)
        shards.put_atomic(self.fs, f"{folder}/{MANIFEST_NAME}", new.to_json().encode())
        self._sweep(folder, set(paths))
        return new

    def _sweep(self, folder: str, keep: set[str]) -> None:
        """Delete files of a committed stage that its manifest does not name."""
        for info in self.fs.get_file_info(pafs.FileSelector(folder, recursive=True)):
            rel = info.path[len(folder) + 1:]
            if info.type == pafs.FileType.File and rel != MANIFEST_NAME and rel not in keep:
                self.fs.delete_file(info.path)

    def describe(self, round: int, stage: str, rel: str) -> ShardInfo:
        """ShardInfo of a non-table file already written under the stage directory."""
        path = f"{self.stage_dir(round, stage)}/{rel}"
        size = self.fs.get_file_info(path).size
        return ShardInfo(path=rel, bytes=size, sha256=shards.sha256_of(self.fs, path))

    # -- reading ------------------------------------------------------------
    def rounds(self) -> list[int]:
        """Rounds with at least one committed stage, ascending."""
        base = f"{self.root}/rounds"
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        found = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted({int(i.path[len(base) + 1:].split("/")[0]) for i in found if i.base_name == MANIFEST_NAME})

    def stages(self, round: int) -> dict[str, Manifest]:
        """Committed stages of a round, by name."""
        base = f"{self.root}/rounds/{int(round):06d}"
        listing = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        names = sorted(i.base_name for i in listing if i.type == pafs.FileType.Directory)
        return {n: m for n in names if (m := self.manifest(round, n)) is not None}

    def shard_paths(self, table: str, round: int, full_check: bool = False) -> list[str]:
        """Committed shard files of ``table`` in ``round``, each verified (size, footer, schema)."""
        stage = _stage_of(table)
        manifest = self.manifest(round, stage)
        if manifest is None:
            raise StageNotCommitted(f"{self.stage_dir(round, stage)}: round {round} has no committed "
                                    f"{stage!r} stage, so no {table!r} table")
        folder = self.stage_dir(round, stage)
        files = [f for f in manifest.files if f.table == table]
        for f in files:
            shards.verify(self.fs, folder, f, full=full_check)
        return [f"{folder}/{f.path}" for f in files]

    def scan(self, table: str, rounds: Iterable[int] | None = None, full_check: bool = False) -> pl.LazyFrame:
        """A LazyFrame over the committed shards of ``table`` in ``rounds`` (default: every round)."""
        stage = _stage_of(table)
        chosen = list(rounds) if rounds is not None else [r for r in self.rounds() if self.is_committed(r, stage)]
        paths = [p for r in chosen for p in self.shard_paths(table, r, full_check)]
        empty = pl.from_arrow(TABLES[table].empty_table())
        if not paths:
            return empty.lazy()
        # by the current schema: columns an older schema version lacks read as nulls
        if is_local(self.fs):
            return pl.scan_parquet(paths, schema=empty.schema, missing_columns="insert")
        dataset = pads.dataset(paths, schema=TABLES[table], filesystem=self.fs, format="parquet")
        return pl.scan_pyarrow_dataset(dataset)

    def read(self, table: str, rounds: Iterable[int] | None = None) -> pl.DataFrame:
        """Eager ``scan``."""
        return self.scan(table, rounds).collect()

    def verify(self) -> int:
        """Check every committed file of the run against its manifest, checksums included; return the count."""
        count = 0
        for r in self.rounds():
            for stage, manifest in self.stages(r).items():
                for f in manifest.files:
                    shards.verify(self.fs, self.stage_dir(r, stage), f, full=True)
                    count += 1
        return count


def _stage_of(table: str) -> str:
    if table not in TABLE_STAGE:
        raise SchemaMismatch(f"unknown table {table!r}; expected one of {sorted(TABLE_STAGE)}")
    return TABLE_STAGE[table]


def open_run(uri: str, filesystem: Any = None) -> Run:
    """Open (lazily create) a run directory at a local path or URI.

    >>> import tempfile
    >>> open_run(tempfile.mkdtemp()).rounds()
    []
    """
    return Run(uri, filesystem)


def write_shard(run: Run | str, round: int, table: str, data, shard: str) -> ShardInfo:
    """Validate ``data`` against ``table``'s schema and write it as one shard, atomically.

    The shard lands in the stage that owns the table (``steps`` and
    ``episodes`` in ``trajectories``, ...). The same shard name written twice
    (a retried task) replaces the first file. Refused when the stage is committed.
    """
    run = run if isinstance(run, Run) else open_run(run)
    stage = _stage_of(table)
    where = f"{run.stage_dir(round, stage)}/{table}/{_check_name('shard', shard)}.parquet"
    if run.is_committed(round, stage):
        raise StageCommitted(f"{where}: stage {stage!r} of round {round} is committed; "
                             "call run.begin(round, stage, overwrite=True) to redo it")
    tbl = shards.conform(data, table, where)
    return shards.write_file(run.fs, run.stage_dir(round, stage), f"{table}/{shard}.parquet", tbl, table)


__all__ = ["Run", "open_run", "write_shard", "LOCK_NAME"]
