"""Stage manifests: the commit record of one stage of one round.

A stage is committed when its manifest exists. The manifest is written last,
so readers that only follow manifests never see a half-written stage.

>>> m = Manifest(round=0, stage="trajectories", policy_version=0, config_hash="c0", files=[])
>>> Manifest.from_json(m.to_json()) == m
True
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from storage.schemas import SCHEMA_VERSION

MANIFEST_NAME = "_MANIFEST.json"


@dataclass(frozen=True)
class ShardInfo:
    """One file of a stage, as written by ``write_shard`` or ``describe_file``."""

    path: str  # path relative to the stage directory, e.g. "steps/w0-b3.parquet"
    bytes: int  # file size
    sha256: str  # hex digest of the file's bytes
    table: str | None = None  # table the shard belongs to; None for other files (checkpoints)
    rows: int = 0  # row count of a table shard
    footer_sha256: str = ""  # SHA-256 of a table shard's Parquet footer; such a shard's pages carry CRC-32s too


@dataclass(frozen=True)
class Manifest:
    """What a committed stage holds; equality compares content, not ``created_at``."""

    round: int  # the round the stage belongs to
    stage: str  # "trajectories", "advantages", "checkpoint", "evaluation", ...
    policy_version: int  # round whose checkpoint produced the data
    config_hash: str  # hash of the config that produced the data
    files: list[ShardInfo]  # every file of the stage; nothing else exists for readers
    schema_version: int = SCHEMA_VERSION  # storage schema version of the table shards
    created_at: str = field(default="", compare=False)  # ISO time of the commit
    retired: list[ShardInfo] = field(default_factory=list)  # files removed on purpose since the commit (retention)
    retired_note: str = ""  # why they were removed

    def rows(self, table: str) -> int:
        """Total rows of ``table`` in this stage."""
        return sum(f.rows for f in self.files if f.table == table)

    def tables(self) -> list[str]:
        """Tables with shards in this stage, sorted."""
        return sorted({f.table for f in self.files if f.table is not None})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> "Manifest":
        try:
            raw = json.loads(text)
            raw["files"] = [ShardInfo(**f) for f in raw["files"]]
            raw["retired"] = [ShardInfo(**f) for f in raw.get("retired", [])]
            return cls(**raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{where}: not a valid stage manifest ({exc})") from exc
