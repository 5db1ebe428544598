"""Turn a run URI into a pyarrow filesystem and a path on it.

Local paths and ``file://`` map to the local disk; ``memory://`` to fsspec's
in-process memory filesystem (tests); anything else (``s3://``, ``gs://``,
``hdfs://``, ...) to pyarrow's own filesystem, or to fsspec's when pyarrow
has none for that scheme. An explicit fsspec or pyarrow filesystem also works.

>>> fs, path = resolve("memory://runs/demo")
>>> path
'/runs/demo'
"""
from __future__ import annotations

import os
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
from fsspec.implementations.memory import MemoryFileSystem


def as_pyarrow(filesystem: Any) -> pafs.FileSystem:
    """Wrap an fsspec filesystem for pyarrow; pass a pyarrow one through."""
    if isinstance(filesystem, pafs.FileSystem):
        return filesystem
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))


def scheme(uri: str) -> str:
    """The scheme of ``uri``; ``file`` for a plain path.

    >>> scheme("s3://bucket/run"), scheme("runs/demo")
    ('s3', 'file')
    """
    return uri.split("://", 1)[0] if "://" in uri else "file"


def resolve(uri: str, filesystem: Any = None) -> tuple[pafs.FileSystem, str]:
    """Return (pyarrow filesystem, path without scheme) for ``uri``."""
    if filesystem is not None:
        return as_pyarrow(filesystem), uri.split("://", 1)[-1]
    rest = uri.split("://", 1)[-1]
    if scheme(uri) == "file":
        return pafs.LocalFileSystem(), os.path.abspath(rest)
    if scheme(uri) == "memory":
        return as_pyarrow(fsspec.filesystem("memory")), "/" + rest.strip("/")
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        fs, path = fsspec.core.url_to_fs(uri)
        return as_pyarrow(fs), path


def is_local(fs: pafs.FileSystem) -> bool:
    """True when paths on ``fs`` are paths of this machine's disk."""
    return isinstance(fs, pafs.LocalFileSystem)


def is_memory(fs: pafs.FileSystem) -> bool:
    """True for fsspec's in-process memory filesystem (tests)."""
    handler = fs.handler if isinstance(fs, pafs.PyFileSystem) else None
    return isinstance(getattr(handler, "fs", None), MemoryFileSystem)
