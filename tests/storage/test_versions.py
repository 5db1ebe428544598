"""Schema versions: runs written with versions 1 and 2 stay readable; unknown versions and broken shards are named."""
from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from storage.schemas import ADDED_IN, ADVANTAGE_COLUMNS, ADVANTAGES, STEPS, TABLE_KEY, VERSION_KEY
from storage.shards import put_atomic
from storage.synthetic import synthetic_round

V1_STEPS = pa.schema([f for f in STEPS if f.name not in ADDED_IN[2]["steps"]])


def write_v1_steps(run, r: int, steps: pl.DataFrame, version: bytes = b"1", schema=V1_STEPS) -> pl.DataFrame:
    """Commit ``steps`` (``schema``'s columns) as the version-1 code wrote them; return what was written."""
    return write_old(run, r, "trajectories", "steps", steps, version, schema)


def write_old(run, r: int, stage: str, table: str, frame: pl.DataFrame, version: bytes, schema) -> pl.DataFrame:
    """Commit ``frame`` (``schema``'s columns) as one shard of ``table``, as older code wrote it."""
    tbl = frame.select(schema.names).to_arrow().cast(schema)
    tbl = tbl.replace_schema_metadata({VERSION_KEY: version, TABLE_KEY: table.encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(tbl, sink, compression="zstd")
    payload = sink.getvalue().to_pybytes()
    put_atomic(run.fs, f"{run.stage_dir(r, stage)}/{table}/w0.parquet", payload)
    info = storage.ShardInfo(path=f"{table}/w0.parquet", bytes=len(payload),
                             sha256=hashlib.sha256(payload).hexdigest(), table=table, rows=tbl.num_rows)
    run.commit(r, stage, [info], "cfg", 0)
    return pl.from_arrow(tbl)


def with_advantages(steps: pl.DataFrame) -> pl.DataFrame:
    """``steps`` plus made-up advantage columns that differ row by row."""
    i = pl.int_range(pl.len())
    return steps.with_columns(*(i.cast(pl.Float64).alias(f.name) * k for k, f in enumerate(ADVANTAGE_COLUMNS[:3])),
                              (i % 5).cast(pl.Int32).alias("anchor_group_size"), (i * 0.5 - 3).alias("advantage"),
                              (i % 3).cast(pl.Int32).alias("anchor_id"))


def test_slim_advantages_read_back_as_the_joined_table(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps = synthetic_round(0, groups=2, group_size=2, seed=0)[0].sample(fraction=1.0, shuffle=True, seed=3)
    run.commit(0, "trajectories", [storage.write_shard(run, 0, "steps", steps, "w0")], "cfg", 0)
    full = with_advantages(steps)
    stored = full.select(ADVANTAGES.names).reverse()  # keys, not positions, carry the join
    info = storage.write_shard(run, 0, "advantages", stored, "a0")
    run.commit(0, "advantages", [info], "adv", 0)
    assert pq.read_schema(f"{run.stage_dir(0, 'advantages')}/advantages/a0.parquet").names == ADVANTAGES.names
    assert run.read("advantages").equals(full)  # the steps' rows, in their order, with the advantage columns


def test_v2_advantages_with_token_columns_stay_readable(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps = synthetic_round(0, groups=2, group_size=2, seed=0)[0]
    write_old(run, 0, "trajectories", "steps", steps, b"2", STEPS)
    old_schema = pa.schema(list(STEPS) + list(ADVANTAGES)[3:])
    full = write_old(run, 0, "advantages", "advantages", with_advantages(steps), b"2", old_schema)
    assert run.read("advantages").equals(full)
    assert run.verify() == 2
    with pytest.raises(storage.SchemaMismatch, match="unexpected column"):  # new shards must be slim
        storage.write_shard(run, 1, "advantages", full, "a0")


@pytest.mark.parametrize("scheme", ["path", "memory"])  # polars' own reader and the pyarrow dataset path
def test_v1_steps_read_back_with_null_state_columns(tmp_path, scheme):
    run = storage.open_run(str(tmp_path / "run") if scheme == "path" else f"memory://{tmp_path.name}/run")
    steps = synthetic_round(0, groups=2, group_size=2, seed=0)[0]
    written = write_v1_steps(run, 0, steps)
    got = run.read("steps", rounds=[0])
    assert got.columns == STEPS.names
    assert got.select(written.columns).equals(written)
    assert got["state_key"].dtype == pl.UInt64 and got["state_key"].null_count() == got.height > 0
    assert got["admissible_key"].null_count() == got.height
    assert run.verify() == 1


def test_v1_and_v2_rounds_scan_together(tmp_path):
    run = storage.open_run(str(tmp_path))
    old = synthetic_round(0, groups=1, group_size=2, seed=0)[0]
    write_v1_steps(run, 0, old)
    new, _ = synthetic_round(1, groups=1, group_size=2, seed=1)
    run.commit(1, "trajectories", [storage.write_shard(run, 1, "steps", new, "w0")], "cfg", 1)
    got = run.scan("steps").select("round", "state_key").collect()
    assert got.filter(pl.col("round") == 0)["state_key"].null_count() == old.height
    assert got.filter(pl.col("round") == 1)["state_key"].to_list() == new["state_key"].to_list()


def test_v1_shard_lacking_a_v1_column_names_file_and_column(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps = synthetic_round(0, groups=1, group_size=2, seed=0)[0]
    no_anchor = pa.schema([f for f in V1_STEPS if f.name != "anchor_key"])
    with pytest.raises(storage.SchemaMismatch,
                       match=r"000000/trajectories/steps/w0.parquet: missing column 'anchor_key' \(uint64\)"):
        write_v1_steps(run, 0, steps, schema=no_anchor)


def test_unknown_version_names_the_file(tmp_path):
    run = storage.open_run(str(tmp_path))
    steps = synthetic_round(0, groups=1, group_size=2)[0]
    with pytest.raises(storage.SchemaMismatch, match=r"steps/w0.parquet: schema version 4, expected 3 \(readable"):
        write_v1_steps(run, 0, steps, version=b"4")
