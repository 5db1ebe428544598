"""Table shards: schema conformance, atomic Parquet writes, verified reads.

A shard is one Parquet file of one table. It is written whole to a temporary
name and renamed, so a crash leaves either nothing or a complete file; its
SHA-256, size and footer digest go into the stage manifest at commit. Every
file the project writes whole goes through ``put_atomic`` (``pyarrow.fs.LocalFileSystem()``
for a file outside a run), every folder through ``build_folder``.

Integrity at read: every data page carries a CRC-32 (Parquet page checksums),
checked by every read of this module, and the footer (schema, offsets,
statistics) is checked against the manifest's digest before a shard is read;
a flipped byte raises ``CorruptShard`` naming the file. A shard written before
page checksums (no footer digest in its manifest) is checked by its whole
SHA-256 instead. Polars' own Parquet reader skips page checksums, so
``scan`` reads through pyarrow.

>>> import polars as pl
>>> from storage.schemas import EVALUATION
>>> conform(pl.DataFrame(EVALUATION.empty_table()), "evaluation", "demo").num_rows
0
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from polars.io.plugins import register_io_source

from storage.errors import CorruptShard, RunNotWritable, SchemaMismatch
from storage.manifest import ShardInfo
from storage.schemas import READABLE_VERSIONS, SCHEMA_VERSION, TABLE_KEY, TABLES, VERSION_KEY, absent_in

# target uncompressed bytes per row group: bounded memory when streaming, few enough groups for fast list decoding
ROW_GROUP_BYTES = 256 << 20
COMPRESSION = "zstd"


def _kind(t: pa.DataType) -> str:
    """A type's identity up to Arrow's offset width and view variants."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return f"list<{_kind(t.value_type)}>"
    return str(t)


def _holds_text(t: pa.DataType) -> bool:
    """Whether a type is or nests (in lists, structs, maps) a string type.

    >>> [_holds_text(t) for t in (pa.list_(pa.struct([("a", pa.large_string())])), pa.list_(pa.int32()))]
    [True, False]
    """
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return True
    return any(_holds_text(t.field(i).type) for i in range(t.num_fields))


def _check_text(col: pa.ChunkedArray, name: str, table: str, where: str) -> None:
    """Raise SchemaMismatch unless every string in ``col`` is valid UTF-8 (Polars panics reading invalid UTF-8).

    Arrow builds string arrays from raw buffers without checking them; a full
    validation (vectorised) does.
    """
    try:
        col.validate(full=True)
    except pa.ArrowInvalid as exc:
        detail = " ".join(str(exc).split())
        raise SchemaMismatch(f"{where}: column {name!r} of table {table!r} holds invalid UTF-8 ({detail}); "
                             "expected valid UTF-8 strings") from exc


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Parquet column paths to dictionary-encode: all but floats (and lists of floats).

    Float values rarely repeat: trying a dictionary for them first costs ~30% of
    a slim advantages write and saves nothing. Token ids keep theirs (smaller files).
    """
    paths = []
    for field in schema:
        nested = _kind(field.type).startswith("list<")
        leaf = field.type.value_type if nested else field.type
        if not pa.types.is_floating(leaf):
            paths.append(f"{field.name}.list.element" if nested else field.name)
    return paths


def conform(data: pa.Table | pl.DataFrame, table: str, where: str) -> pa.Table:
    """Return ``data`` cast to ``table``'s exact schema, or raise SchemaMismatch (also for invalid UTF-8 text)."""
    if table not in TABLES:
        raise SchemaMismatch(f"{where}: unknown table {table!r}; expected one of {sorted(TABLES)}")
    schema = TABLES[table]
    tbl = data.to_arrow() if isinstance(data, pl.DataFrame) else data
    extra = sorted(set(tbl.column_names) - set(schema.names))
    if extra:
        raise SchemaMismatch(f"{where}: unexpected column(s) {extra} for table {table!r}")
    columns = []
    for field in schema:
        if field.name not in tbl.column_names:
            raise SchemaMismatch(f"{where}: missing column {field.name!r} ({field.type}) of table {table!r}")
        col = tbl.column(field.name)
        if _kind(col.type) != _kind(field.type):
            raise SchemaMismatch(f"{where}: column {field.name!r} has type {col.type}, expected {field.type}")
        if not field.nullable and col.null_count:
            raise SchemaMismatch(f"{where}: column {field.name!r} has {col.null_count} null(s), expected none")
        col = col.cast(field.type)
        if _holds_text(field.type):
            _check_text(col, field.name, table, where)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def encode(tbl: pa.Table, table: str) -> pa.Buffer:
    """Serialise a conformed table to Parquet bytes with page checksums, tagged with table and schema version."""
    tbl = tbl.replace_schema_metadata({VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: table.encode()})
    row_bytes = max(1, tbl.nbytes // max(1, tbl.num_rows))
    sink = pa.BufferOutputStream()
    pq.write_table(tbl, sink, compression=COMPRESSION, row_group_size=max(1024, ROW_GROUP_BYTES // row_bytes),
                   use_dictionary=dictionary_columns(tbl.schema), write_page_checksum=True)
    return sink.getvalue()


def put_atomic(fs: pafs.FileSystem, path: str, payload: bytes | pa.Buffer) -> None:
    """Write ``payload`` to a temporary name beside ``path``, then rename it into place.

    A failed write (disk full, read-only) removes the temporary file and raises
    ``RunNotWritable`` naming ``path``.
    """
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.tmp-{uuid.uuid4().hex}-{name}"
    try:
        fs.create_dir(folder, recursive=True)
        with fs.open_output_stream(tmp) as out:
            out.write(payload)
        fs.move(tmp, path)
    except OSError as exc:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass  # never created, or the filesystem refuses even that
        raise RunNotWritable(f"{path}: cannot write ({exc})") from exc


def build_folder(path: str, build: Callable[[str], object]) -> None:
    """Run ``build(tmp)`` on a temporary folder beside ``path``, then rename it to ``path``.

    ``path`` thus exists only complete; a build killed half-way leaves a
    ``<name>.tmp-*`` folder that the next build removes (callers hold the run lock).

    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> build_folder(f"{root}/model", lambda tmp: open(f"{tmp}/config.json", "w").close())
    >>> os.listdir(root), os.listdir(f"{root}/model")
    (['model'], ['config.json'])
    """
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    for stale in glob.glob(os.path.join(glob.escape(parent), glob.escape(name) + ".tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=parent)
    build(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)


def footer_sha256(tail: bytes | pa.Buffer) -> str:
    """SHA-256 of a Parquet file's footer (metadata, its length and the magic), from the file's last bytes."""
    tail = memoryview(tail)
    size = len(tail)
    n = min(int.from_bytes(tail[size - 8:size - 4], "little") + 8, size) if size >= 8 else size
    return hashlib.sha256(tail[size - n:]).hexdigest()


def write_file(fs: pafs.FileSystem, stage_dir: str, rel: str, tbl: pa.Table, table: str) -> ShardInfo:
    """Write one conformed table shard atomically at ``stage_dir/rel``."""
    payload = encode(tbl, table)
    with ThreadPoolExecutor(1) as pool:  # hashlib releases the GIL: hash while the file is written
        digest = pool.submit(lambda: hashlib.sha256(payload).hexdigest())
        put_atomic(fs, f"{stage_dir}/{rel}", payload)
        return ShardInfo(path=rel, bytes=payload.size, sha256=digest.result(), table=table, rows=tbl.num_rows,
                         footer_sha256=footer_sha256(payload))


def sha256_of(fs: pafs.FileSystem, path: str) -> str:
    """Stream a file through SHA-256."""
    digest = hashlib.sha256()
    try:
        with fs.open_input_stream(path) as src:
            while chunk := src.read(8 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise CorruptShard(f"{path}: cannot read ({exc})") from exc
    return digest.hexdigest()


def verify(fs: pafs.FileSystem, stage_dir: str, shard: ShardInfo, full: bool = False) -> None:
    """Check that a manifest's file exists with its size, footer and schema (and SHA-256 if ``full``).

    A table shard without a footer digest (written before page checksums) is
    always checked in full: a read could not tell its flipped bytes.
    """
    path = f"{stage_dir}/{shard.path}"
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise CorruptShard(f"{path}: named in the stage manifest but missing")
    if info.size != shard.bytes:
        raise CorruptShard(f"{path}: {info.size} bytes, the manifest says {shard.bytes} (truncated or replaced)")
    if shard.table is not None:
        check_footer(fs, path, shard.table, shard.footer_sha256)
    if (full or (shard.table is not None and not shard.footer_sha256)) and sha256_of(fs, path) != shard.sha256:
        raise CorruptShard(f"{path}: SHA-256 differs from the manifest (corrupted)")


def _footer_digest(src: pa.NativeFile) -> str:
    size = src.size()
    n = min(int.from_bytes(src.read_at(4, size - 8), "little") + 8, size) if size >= 8 else size
    return footer_sha256(src.read_at(n, size - n))


def check_footer(fs: pafs.FileSystem, path: str, table: str, digest: str = "") -> None:
    """Read a shard's footer: check it against ``digest`` (when given), its schema version and columns against
    ``table``."""
    try:
        with fs.open_input_file(path) as src:
            if digest and _footer_digest(src) != digest:
                raise CorruptShard(f"{path}: Parquet footer differs from the manifest's digest (corrupted)")
            found = pq.read_schema(src)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(f"{path}: not a readable Parquet file ({exc})") from exc
    meta = found.metadata or {}
    version = meta.get(VERSION_KEY, b"none").decode()
    if version not in [str(v) for v in READABLE_VERSIONS]:
        raise SchemaMismatch(f"{path}: schema version {version}, expected {SCHEMA_VERSION} "
                             f"(readable: {list(READABLE_VERSIONS)})")
    absent = absent_in(table, int(version))  # added after the shard's version: read as nulls
    for field in TABLES[table]:
        idx = found.get_field_index(field.name)
        if idx < 0 and field.name in absent:
            continue
        if idx < 0:
            raise SchemaMismatch(f"{path}: missing column {field.name!r} ({field.type}) of table {table!r}")
        if _kind(found.field(idx).type) != _kind(field.type):
            raise SchemaMismatch(
                f"{path}: column {field.name!r} has type {found.field(idx).type}, expected {field.type}")


def _open(fs: pafs.FileSystem | None, path: str) -> pq.ParquetFile:
    return pq.ParquetFile(path, filesystem=fs or pafs.LocalFileSystem(), page_checksum_verification=True)


def read_table(fs: pafs.FileSystem | None, path: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file (optionally projected), verifying its page checksums; errors name the file."""
    try:
        with _open(fs, path) as f:
            return f.read(columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(f"{path}: cannot read Parquet data ({exc})") from exc


def read_schema(fs: pafs.FileSystem | None, path: str) -> pa.Schema:
    """The Arrow schema of one Parquet file; errors name the file."""
    try:
        with _open(fs, path) as f:
            return f.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(f"{path}: not a readable Parquet file ({exc})") from exc


def num_rows(fs: pafs.FileSystem | None, path: str) -> int:
    """Rows of one Parquet file, from its footer; errors name the file."""
    try:
        with _open(fs, path) as f:
            return f.metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(f"{path}: not a readable Parquet file ({exc})") from exc


def read_file(fs: pafs.FileSystem, path: str, table: str, columns: list[str] | None = None) -> pa.Table:
    """Read one shard (optionally projected), checking its schema first."""
    check_footer(fs, path, table)
    return read_table(fs, path, columns)


def _row_groups(fs: pafs.FileSystem, path: str, columns: list[str] | None, schema: pl.Schema):
    """Yield a file's row groups as DataFrames of ``schema`` (bounded memory), pages verified; errors name the file.

    Columns an older schema version lacks read as nulls.
    """
    try:
        f = _open(fs, path)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(f"{path}: not a readable Parquet file ({exc})") from exc
    with f:
        want = list(schema) if columns is None else columns
        present = set(f.schema_arrow.names)
        missing = [pl.lit(None, dtype=schema[c]).alias(c) for c in want if c not in present]
        for i in range(f.num_row_groups):
            try:
                group = f.read_row_group(i, columns=[c for c in want if c in present])
            except (OSError, pa.ArrowException) as exc:
                raise CorruptShard(f"{path}: cannot read row group {i} ({exc})") from exc
            frame = pl.from_arrow(group)
            yield frame.with_columns(missing).select(want) if missing else frame


def scan_files(fs: pafs.FileSystem, paths: list[str], schema: pa.Schema) -> pl.LazyFrame:
    """A LazyFrame over Parquet ``paths`` of ``schema``, read through pyarrow with page checksums verified.

    Projections, predicates and row limits are pushed into the read (a Polars
    IO plugin); a corrupt page raises ``CorruptShard`` naming its file when the
    frame is collected.
    """
    empty = pl.from_arrow(schema.empty_table())

    def source(with_columns, predicate, n_rows, _batch_size):
        left, read = n_rows, with_columns
        if read is not None and predicate is not None:
            read = list(dict.fromkeys(read + predicate.meta.root_names()))
        for path in paths:
            for frame in _row_groups(fs, path, read, empty.schema):
                frame = frame.filter(predicate) if predicate is not None else frame
                frame = frame.select(with_columns) if with_columns is not None else frame
                if left is not None:
                    frame, left = frame.head(left), left - min(left, frame.height)
                yield frame
                if left == 0:
                    return

    return register_io_source(source, schema=empty.schema)
