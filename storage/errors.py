"""Errors of the run directory; each names the file, table or column at fault."""
from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage error."""


class SchemaMismatch(StorageError):
    """A shard or frame does not match its table's schema (names the column)."""


class CorruptShard(StorageError):
    """A committed file (a shard, a checkpoint file) is missing, truncated, unreadable or fails its checksum."""


class CorruptManifest(StorageError):
    """A stage manifest that cannot be read or parsed (names it; ``python -m storage uncommit`` removes the stage)."""


class RunNotWritable(StorageError):
    """A write to the run directory failed: read-only, full or not permitted (names the path)."""


class StageCommitted(StorageError):
    """A write or commit targets a stage that is already committed."""


class StageNotCommitted(StorageError):
    """A read asks for a stage that has no committed manifest."""


class NotARun(StorageError):
    """A reader was pointed at a path that holds no run (neither rounds/ nor configs/)."""


class RunLocked(StorageError):
    """Another driver holds the run's lock."""


class ForeignDirectory(StorageError):
    """A folder (or a file in a stage folder) that the project did not write; names it and what it holds."""
