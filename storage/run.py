"""The run directory: rounds, stages, commits and the Polars read API.

Layout (any pyarrow/fsspec filesystem)::

    RUN/_LOCK
    RUN/rounds/000003/trajectories/steps/<shard>.parquet
    RUN/rounds/000003/trajectories/episodes/<shard>.parquet
    RUN/rounds/000003/trajectories/_MANIFEST.json     <- written last: the commit
    RUN/rounds/000003/advantages/...
    RUN/rounds/000003/checkpoint/...                   <- HF checkpoint files

Files that no committed manifest names do not exist for readers. Every read
checks what it reads (see ``storage.shards``): a flipped byte, a missing or
truncated file, an unreadable manifest raise a ``StorageError`` naming it.

>>> import tempfile, storage
>>> run = storage.open_run(tempfile.mkdtemp())
>>> run.rounds()
[]
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import polars as pl
import pyarrow.fs as pafs

from storage import shards
from storage.checks import THREADS, full_problems, read_manifest, size_problems
from storage.errors import (
    CorruptManifest,
    CorruptShard,
    NotARun,
    RunNotWritable,
    SchemaMismatch,
    StageCommitted,
    StageNotCommitted,
)
from storage.identity import check_claimable, claim, read_mark
from storage.lock import LOCK_NAME, RunLock
from storage.manifest import MANIFEST_NAME, Manifest, ShardInfo
from storage.schemas import TABLE_STAGE, TABLES, VIEWS
from storage.stage_files import delete_files, own_files
from storage.uri import resolve

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

    @property
    def id(self) -> str:
        """The run's id from its mark (``storage.identity``); unmarked runs: 12 hex digits of their URI's SHA-256."""
        if not hasattr(self, "_id"):
            mark = read_mark(self.fs, self.root)
            self._id = mark.run_id if mark else hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        return self._id

    # -- layout -------------------------------------------------------------
    def stage_dir(self, round: int, stage: str) -> str:
        """Directory of one stage of one round (stage files live under it)."""
        return f"{self.root}/rounds/{int(round):06d}/{_check_name('stage', stage)}"

    @contextlib.contextmanager
    def lock(self, check: bool = True) -> Iterator[RunLock]:
        """``with run.lock():`` makes this process the run's only writer.

        With ``check``, every committed manifest must be readable first
        (``CorruptManifest`` names one that is not), so no writer builds on a
        garbage commit record; ``check=False`` is for repairing one (``uncommit``).
        """
        with RunLock(self.fs, self.root) as held:
            if check:
                self.manifests()
            yield held

    @contextlib.contextmanager
    def claim(self) -> Iterator[RunLock]:
        """``with run.claim():`` a driver's lock on a run it may write: the folder is missing, empty or a run.

        A non-empty folder that is not a run raises ``ForeignDirectory`` before
        anything is written in it; otherwise the run is locked and marked.
        """
        check_claimable(self.fs, self.root)
        with self.lock() as held:
            try:
                self._id = claim(self.fs, self.root).run_id
            except RunNotWritable:  # a read-only run made before marks: read as it is; a first write fails anyway
                pass
            yield held

    # -- commits ------------------------------------------------------------
    def manifest(self, round: int, stage: str) -> Manifest | None:
        """The stage's manifest, or None when the stage is not committed; ``CorruptManifest`` if unreadable."""
        try:
            return read_manifest(self.fs, f"{self.stage_dir(round, stage)}/{MANIFEST_NAME}")
        except CorruptManifest as exc:
            raise CorruptManifest(f"{exc}; to redo the stage: python -m storage uncommit {self.uri} "
                                  f"--round {round} --stage {stage}") from exc

    def is_committed(self, round: int, stage: str) -> bool:
        return self.fs.get_file_info(f"{self.stage_dir(round, stage)}/{MANIFEST_NAME}").type == pafs.FileType.File

    def begin(self, round: int, stage: str, overwrite: bool = False) -> None:
        """Start (or restart) a stage: remove a crashed attempt's leftovers.

        A committed stage is refused unless ``overwrite``; then it is
        uncommitted first (manifest removed), so a crash mid-way leaves no
        half-old, half-new stage.
        """
        folder = self.stage_dir(round, stage)
        if self.is_committed(round, stage) and not overwrite:
            raise StageCommitted(f"{folder}: stage {stage!r} of round {round} is committed; "
                                 "pass overwrite=True to redo it")
        committed = self.is_committed(round, stage)
        try:
            old = self.manifest(round, stage)
        except CorruptManifest:  # uncommit's repair: its files are still the stage's own names
            old = None
        named = {f.path for f in old.files + old.retired} if old else set()
        try:
            files = own_files(self.fs, stage, folder, named)
            if committed:
                self.fs.delete_file(f"{folder}/{MANIFEST_NAME}")
            delete_files(self.fs, folder, files, keep=set())
        except OSError as exc:
            raise RunNotWritable(f"{folder}: cannot clear the stage directory ({exc})") from exc

    def commit(self, round: int, stage: str, shards_: Iterable[ShardInfo], config_hash: str,
               policy_version: int) -> Manifest:
        """Commit a stage by writing its manifest last; the same commit again is a no-op."""
        files = sorted(shards_, key=lambda s: s.path)
        folder = self.stage_dir(round, stage)
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise ValueError(f"{folder}: shard list names a file twice: "
                             f"{sorted({p for p in paths if paths.count(p) > 1})}")
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
        here = own_files(self.fs, stage, folder, set(paths))  # a foreign file: nothing committed, nothing deleted
        shards.put_atomic(self.fs, f"{folder}/{MANIFEST_NAME}", new.to_json().encode())
        delete_files(self.fs, folder, here, set(paths))
        return new

    def retire(self, round: int, stage: str, keep: Iterable[str], note: str) -> list[ShardInfo]:
        """Remove a committed stage's files but ``keep``, on purpose; the files retired (now or before).

        The manifest is rewritten first, naming the files under ``retired``
        (with ``note``), then they are deleted: ``audit``/``storage verify``
        check only ``files``, so retired files are no loss, and a crash in
        between leaves files no manifest names, deleted by the next call.
        """
        m = self.manifest(round, stage)
        if m is None:
            raise StageNotCommitted(f"{self.stage_dir(round, stage)}: stage {stage!r} of round {round} is not "
                                    "committed: nothing to retire")
        keep = set(keep)
        folder = self.stage_dir(round, stage)
        if gone := [f for f in m.files if f.path not in keep]:
            m = dataclasses.replace(m, files=[f for f in m.files if f.path in keep], retired=m.retired + gone,
                                    retired_note=note)
            shards.put_atomic(self.fs, f"{folder}/{MANIFEST_NAME}", m.to_json().encode())
        self._sweep(stage, folder, {f.path for f in m.files})
        return m.retired

    def _sweep(self, stage: str, folder: str, keep: set[str]) -> None:
        """Delete the stage's files that its manifest does not name."""
        delete_files(self.fs, folder, own_files(self.fs, stage, folder, keep), keep)

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
        return {n: m for n in self.stage_names(round) if (m := self.manifest(round, n)) is not None}

    def stage_names(self, round: int) -> list[str]:
        """Stage directories of a round, committed or not, sorted."""
        base = f"{self.root}/rounds/{int(round):06d}"
        listing = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        return sorted(i.base_name for i in listing if i.type == pafs.FileType.Directory)

    def manifests(self) -> dict[tuple[int, str], Manifest]:
        """Every committed stage's manifest by (round, stage); ``CorruptManifest`` names the first unreadable one."""
        found = self._read_manifests()
        for m in found.values():
            if isinstance(m, CorruptManifest):
                raise m
        return found

    def _read_manifests(self) -> dict[tuple[int, str], Manifest | CorruptManifest]:
        keys = [(r, s) for r in self.rounds() for s in self.stage_names(r)]

        def read(key):
            try:
                return self.manifest(*key)
            except CorruptManifest as exc:
                return exc

        with ThreadPoolExecutor(THREADS) as pool:
            return {k: m for k, m in zip(keys, pool.map(read, keys)) if m is not None}

    def shard_paths(self, table: str, round: int, full_check: bool = False) -> list[str]:
        """Committed shard files of ``table`` in ``round``, each verified (size, footer, schema).

        Reads verify page checksums as they go; ``full_check`` hashes every file
        now (as does a shard written before page checksums, always).
        """
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
        """A LazyFrame over the committed shards of ``table`` in ``rounds`` (default: every round).

        A view table (``storage.schemas.VIEWS``: ``advantages``) reads as its stored
        columns joined onto its base table's rows on the keys (``steps``' columns first).

        Verified: sizes, footers and schemas now, page checksums as pages are
        read (``CorruptShard`` naming the file at ``collect``); ``full_check``
        also hashes every file now.
        """
        stage = _stage_of(table)
        chosen = list(rounds) if rounds is not None else [r for r in self.rounds() if self.is_committed(r, stage)]
        if table in VIEWS:
            return self._scan_view(table, chosen, full_check)
        return self._scan_stored(table, chosen, full_check)

    def _scan_stored(self, table: str, rounds: list[int], full_check: bool) -> pl.LazyFrame:
        """The table's own shards in ``rounds``, as stored (older schema versions: absent columns null)."""
        paths = [p for r in rounds for p in self.shard_paths(table, r, full_check)]
        if not paths:
            return pl.from_arrow(TABLES[table].empty_table()).lazy()
        return shards.scan_files(self.fs, paths, TABLES[table])

    def _scan_view(self, table: str, rounds: list[int], full_check: bool) -> pl.LazyFrame:
        """A view table: its stored columns joined onto its base table's rows (base row order kept).

        Shards of older versions that still carry the base table's columns are
        read for their own columns only.
        """
        base, keys = VIEWS[table]
        own = self._scan_stored(table, rounds, full_check)
        rows = self._scan_stored(base, rounds, full_check)
        return rows.join(own, on=list(keys), how="inner", maintain_order="left")

    def read(self, table: str, rounds: Iterable[int] | None = None) -> pl.DataFrame:
        """Eager ``scan``."""
        return self.scan(table, rounds).collect()

    def read_bytes(self, round: int, stage: str, rel: str) -> bytes:
        """A committed stage file's bytes, checked against the manifest's size and SHA-256."""
        manifest = self.manifest(round, stage)
        folder = self.stage_dir(round, stage)
        if manifest is None:
            raise StageNotCommitted(f"{folder}: round {round} has no committed {stage!r} stage")
        info = next((f for f in manifest.files if f.path == rel), None)
        if info is None:
            raise CorruptShard(f"{folder}/{rel}: not named in the stage manifest")
        try:
            with self.fs.open_input_stream(f"{folder}/{rel}") as src:
                data = src.read()
        except OSError as exc:
            raise CorruptShard(f"{folder}/{rel}: cannot read ({exc})") from exc
        if len(data) != info.bytes or hashlib.sha256(data).hexdigest() != info.sha256:
            raise CorruptShard(f"{folder}/{rel}: differs from the manifest's size or SHA-256 (corrupted)")
        return data

    def audit(self, full: bool = False) -> tuple[int, dict[str, str]]:
        """Check every committed file: (files checked, {path: problem} for each bad file or unreadable manifest).

        Cheap by default: each file is present with its manifest's size (one
        listing per stage). ``full`` also reads every footer and SHA-256.
        """
        checked, bad = 0, {}
        for (r, stage), m in self._read_manifests().items():
            folder = self.stage_dir(r, stage)
            if isinstance(m, CorruptManifest):
                bad[f"{folder}/{MANIFEST_NAME}"] = str(m)
                continue
            checked += len(m.files)
            bad |= full_problems(self.fs, folder, m.files) if full else size_problems(self.fs, folder, m.files)
        return checked, bad

    def verify(self) -> int:
        """Check every committed file of the run against its manifest, checksums included; return the count.

        Raises ``CorruptShard`` listing every bad file (one line each) when any is.
        """
        checked, bad = self.audit(full=True)
        if bad:
            raise CorruptShard(f"{len(bad)} of the run's committed file(s) or manifest(s) are bad:\n"
                               + "\n".join(bad.values()))
        return checked


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


def open_existing_run(uri: str, filesystem: Any = None) -> Run:
    """Open a run directory for reading; ``NotARun`` when ``uri`` holds no run (``open_run`` creates one).

    >>> open_existing_run("/nonexistent/run")
    Traceback (most recent call last):
    ...
    storage.errors.NotARun: /nonexistent/run: not a run directory (no rounds/ or configs/ in it)
    """
    run = Run(uri, filesystem)
    found = run.fs.get_file_info([f"{run.root}/rounds", f"{run.root}/configs"])
    if all(info.type != pafs.FileType.Directory for info in found):
        raise NotARun(f"{uri}: not a run directory (no rounds/ or configs/ in it)")
    return run


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
