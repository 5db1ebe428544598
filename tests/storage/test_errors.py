"""Bad input gets a clear error naming the file and column; nothing else is touched."""
from __future__ import annotations

import dataclasses
import hashlib
import os

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from storage.shards import footer_sha256
from storage.synthetic import synthetic_round


@pytest.fixture()
def run(tmp_path):
    run = storage.open_run(str(tmp_path))
    for r in (0, 1):
        steps, episodes = synthetic_round(r, groups=2, group_size=2, seed=r)
        infos = [storage.write_shard(run, r, "steps", steps, "w0"),
                 storage.write_shard(run, r, "episodes", episodes, "w0")]
        run.commit(r, "trajectories", infos, "cfg", 0)
    return run


def _steps():
    return synthetic_round(0, groups=1, group_size=2)[0]


def test_missing_column_is_named(tmp_path):
    with pytest.raises(storage.SchemaMismatch, match=r"steps/w0.parquet: missing column 'anchor_key' \(uint64\)"):
        storage.write_shard(str(tmp_path), 0, "steps", _steps().drop("anchor_key"), "w0")


def test_wrong_type_is_named(tmp_path):
    bad = _steps().with_columns(pl.col("reward").cast(pl.Int64))
    with pytest.raises(storage.SchemaMismatch, match="column 'reward' has type int64, expected float"):
        storage.write_shard(str(tmp_path), 0, "steps", bad, "w0")


def test_extra_column_and_nulls_are_named(tmp_path):
    with pytest.raises(storage.SchemaMismatch, match=r"unexpected column\(s\) \['extra'\]"):
        storage.write_shard(str(tmp_path), 0, "steps", _steps().with_columns(extra=pl.lit(1)), "w0")
    nulls = _steps().with_columns(pl.when(pl.col("step") == 0).then(None).otherwise(pl.col("action")).alias("action"))
    with pytest.raises(storage.SchemaMismatch, match=r"column 'action' has 2 null\(s\), expected none"):
        storage.write_shard(str(tmp_path), 0, "steps", nulls, "w0")


def test_unknown_table_is_refused(tmp_path):
    with pytest.raises(storage.SchemaMismatch, match="unknown table 'stepz'"):
        storage.write_shard(str(tmp_path), 0, "stepz", _steps(), "w0")


def _invalid_utf8(column: str, kind: pa.DataType) -> pa.Table:
    """``_steps()`` with row 1 of ``column`` holding invalid UTF-8 (Arrow does not check raw buffers)."""
    tbl = _steps().to_arrow()
    values = [b"go to loc 1"] * tbl.num_rows
    values[1] = b"go to \xff"
    text = pa.array(values, pa.binary()).view(pa.string()).cast(kind)
    return tbl.set_column(tbl.schema.get_field_index(column), column, text)


@pytest.mark.parametrize("column", ["observation", "action", "task_id"])
@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()], ids=str)
def test_invalid_utf8_is_refused_naming_the_column(tmp_path, column, kind):
    bad = _invalid_utf8(column, kind)
    where = f"{tmp_path}/rounds/000000/trajectories/steps/w0.parquet"
    with pytest.raises(storage.SchemaMismatch) as caught:
        storage.write_shard(str(tmp_path), 0, "steps", bad, "w0")
    assert str(caught.value) == (f"{where}: column {column!r} of table 'steps' holds invalid UTF-8 (In chunk 0: "
                                 "Invalid: Invalid UTF8 sequence at string index 1); expected valid UTF-8 strings")
    assert [f for _, _, files in os.walk(tmp_path) for f in files] == []  # nothing written


def _shard(run, r):
    return f"{run.stage_dir(r, 'trajectories')}/steps/w0.parquet"


def test_other_schema_version_names_the_file(run):
    tbl = pq.read_table(_shard(run, 0))
    meta = dict(tbl.schema.metadata) | {b"gigpo.schema_version": b"0"}
    pq.write_table(tbl.replace_schema_metadata(meta), _shard(run, 0))
    _patch_size(run, 0)
    message = r"000000/trajectories/steps/w0.parquet: schema version 0, expected 3"
    with pytest.raises(storage.SchemaMismatch, match=message):
        run.scan("steps", rounds=[0])
    assert run.read("steps", rounds=[1]).height > 0


def _patch_size(run, r):
    """Rewrite the manifest's sizes and digests for a replaced shard, as a writer of another version would have."""
    m = run.manifest(r, "trajectories")
    folder = run.stage_dir(r, "trajectories")
    files = [dataclasses.replace(f, bytes=len(data := open(f"{folder}/{f.path}", "rb").read()),
                                 sha256=hashlib.sha256(data).hexdigest(), footer_sha256=footer_sha256(data))
             for f in m.files]
    path = f"{run.stage_dir(r, 'trajectories')}/_MANIFEST.json"
    open(path, "w").write(dataclasses.replace(m, files=files).to_json())


def test_wrong_column_type_in_shard_names_file_and_column(run):
    tbl = pq.read_table(_shard(run, 0))
    idx = tbl.schema.get_field_index("step")
    tbl = tbl.set_column(idx, pa.field("step", pa.string()), tbl.column("step").cast(pa.string()))
    pq.write_table(tbl, _shard(run, 0))
    _patch_size(run, 0)
    with pytest.raises(storage.SchemaMismatch, match=r"w0.parquet: column 'step' has type string, expected int32"):
        run.scan("steps", rounds=[0])


def test_truncated_file_names_the_file(run):
    path = _shard(run, 0)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(storage.CorruptShard, match=rf"{path}: \d+ bytes, the manifest says {len(data)}"):
        run.scan("steps", rounds=[0])
    assert run.read("episodes", rounds=[0]).height == 4  # the rest of the round is untouched
    assert run.read("steps", rounds=[1]).height > 0


def test_garbage_footer_names_the_file(run):
    path = _shard(run, 0)
    data = bytearray(open(path, "rb").read())
    data[-8:] = b"XXXXXXXX"
    open(path, "wb").write(bytes(data))
    with pytest.raises(storage.CorruptShard, match=rf"{path}: Parquet footer differs from the manifest's digest"):
        run.scan("steps", rounds=[0])


def test_flipped_byte_fails_the_checksum(run):
    path = _shard(run, 0)
    data = bytearray(open(path, "rb").read())
    data[100] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(storage.CorruptShard, match=rf"{path}: SHA-256 differs from the manifest"):
        run.verify()
    with pytest.raises(storage.CorruptShard, match="SHA-256 differs"):
        run.scan("steps", rounds=[0], full_check=True)


def test_missing_file_names_the_file(run):
    os.remove(_shard(run, 1))
    with pytest.raises(storage.CorruptShard, match=rf"{_shard(run, 1)}: named in the stage manifest but missing"):
        run.scan("steps")
    assert run.read("steps", rounds=[0]).height > 0


def test_commit_refuses_a_shard_that_vanished(tmp_path):
    run = storage.open_run(str(tmp_path))
    info = storage.write_shard(run, 0, "steps", _steps(), "w0")
    os.remove(f"{run.stage_dir(0, 'trajectories')}/{info.path}")
    with pytest.raises(storage.CorruptShard, match="named in the stage manifest but missing"):
        run.commit(0, "trajectories", [info], "cfg", 0)
    assert not run.is_committed(0, "trajectories")


def test_bad_stage_and_shard_names(tmp_path):
    with pytest.raises(ValueError, match="shard name 'a/b'"):
        storage.write_shard(str(tmp_path), 0, "steps", _steps(), "a/b")
    with pytest.raises(ValueError, match="stage name '../x'"):
        storage.open_run(str(tmp_path)).stage_dir(0, "../x")
