"""The run directory: Arrow schemas, atomic Parquet shards, stage commits, Polars reads.

>>> import tempfile, polars as pl, storage
>>> run = storage.open_run(tempfile.mkdtemp())
>>> run.scan("anchor_stats").group_by("round").agg(pl.col("anchored_share").mean()).collect().height
0
"""
from storage.checks import verify_stage_dir
from storage.configs import find_config, save_config
from storage.errors import (
                            CorruptManifest,
                            CorruptShard,
                            ForeignDirectory,
                            NotARun,
                            RunLocked,
                            RunNotWritable,
                            SchemaMismatch,
                            StageCommitted,
                            StageNotCommitted,
                            StorageError,
)
from storage.manifest import Manifest, ShardInfo
from storage.run import Run, open_existing_run, open_run, write_shard
from storage.schemas import SCHEMA_VERSION, TABLES

__all__ = ["CorruptManifest", "CorruptShard", "ForeignDirectory", "Manifest", "NotARun", "Run", "RunLocked",
           "RunNotWritable", "SCHEMA_VERSION", "SchemaMismatch", "ShardInfo", "StageCommitted", "StageNotCommitted",
           "StorageError", "TABLES", "find_config", "open_existing_run", "open_run", "save_config", "verify_stage_dir",
           "write_shard"]
