"""Table shards: schema conformance, atomic Parquet writes, verified reads.

A shard is one Parquet file of one table. It is written whole to a temporary
name and renamed, so a crash leaves either nothing or a complete file; its
SHA-256 and size go into the stage manifest at commit.

>>> import polars as pl
>>> from storage.schemas import EVALUATION
>>> conform(pl.DataFrame(EVALUATION.empty_table()), "evaluation", "demo").num_rows
0
"""
from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.errors import CorruptShard, SchemaMismatch
from storage.manifest import ShardInfo
from storage.schemas import READABLE_VERSIONS, SCHEMA_VERSION, TABLE_KEY, TABLES, VERSION_KEY, absent_in

ROW_GROUP_BYTES = 256 << 20  # target uncompressed bytes per row group: bounded memory when streaming, few enough groups for fast list decoding
COMPRESSION = "zstd"


def _kind(t: pa.DataType) -> str:
    """A type's identity up to Arrow's offset width and view variants."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return f"list<{_kind(t.value_type)}>"
    return str(t)


def conform(data: pa.Table | pl.DataFrame, table: str, where: str) -> pa.Table:
    """Return ``data`` cast to ``table``'s exact schema, or raise SchemaMismatch."""
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
        columns.append(col.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def encode(tbl: pa.Table, table: str) -> pa.Buffer:
    """Serialise a conformed table to Parquet bytes, tagged with table and schema version."""
    tbl = tbl.replace_schema_metadata({VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: table.encode()})
    row_bytes = max(1, tbl.nbytes // max(1, tbl.num_rows))
    sink = pa.BufferOutputStream()
    pq.write_table(tbl, sink, compression=COMPRESSION, row_group_size=max(1024, ROW_GROUP_BYTES // row_bytes))
    return sink.getvalue()


def put_atomic(fs: pafs.FileSystem, path: str, payload: bytes | pa.Buffer) -> None:
    """Write ``payload`` to a temporary name beside ``path``, then rename it into place."""
    folder, name = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.tmp-{uuid.uuid4().hex}-{name}"
    with fs.open_output_stream(tmp) as out:
        out.write(payload)
    fs.move(tmp, path)


def write_file(fs: pafs.FileSystem, stage_dir: str, rel: str, tbl: pa.Table, table: str) -> ShardInfo:
    """Write one conformed table shard atomically at ``stage_dir/rel``."""
    payload = encode(tbl, table)
    with ThreadPoolExecutor(1) as pool:  # hashlib releases the GIL: hash while the file is written
        digest = pool.submit(lambda: hashlib.sha256(payload).hexdigest())
        put_atomic(fs, f"{stage_dir}/{rel}", payload)
        return ShardInfo(path=rel, bytes=payload.size, sha256=digest.result(), table=table, rows=tbl.num_rows)


def sha256_of(fs: pafs.FileSystem, path: str) -> str:
    """Stream a file through SHA-256."""
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as src:
        while chunk := src.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(fs: pafs.FileSystem, stage_dir: str, shard: ShardInfo, full: bool = False) -> None:
    """Check that a manifest's file exists with its size, footer and schema (and checksum if ``full``)."""
    path = f"{stage_dir}/{shard.path}"
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise CorruptShard(f"{path}: named in the stage manifest but missing")
    if info.size != shard.bytes:
        raise CorruptShard(f"{path}: {info.size} bytes, the manifest says {shard.bytes} (truncated or replaced)")
    if shard.table is not None:
        check_schema(fs, path, shard.table)
    if full and sha256_of(fs, path) != shard.sha256:
        raise CorruptShard(f"{path}: SHA-256 differs from the manifest (corrupted)")


def check_schema(fs: pafs.FileSystem, path: str, table: str) -> None:
    """Read a shard's footer and check its schema version and columns against ``table``."""
    try:
        with fs.open_input_file(path) as src:
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


def read_file(fs: pafs.FileSystem, path: str, table: str, columns: list[str] | None = None) -> pa.Table:
    """Read one shard (optionally projected), checking its schema first."""
    check_schema(fs, path, table)
    try:
        with fs.open_input_file(path) as src:
            return pq.read_table(src, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(f"{path}: cannot read Parquet data ({exc})") from exc
