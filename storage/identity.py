"""A run directory's mark, ``RUN/_RUN.json``: the format, its version and the run's id.

A driver makes a run only in a missing or empty folder, and marks it before
writing anything else there. A folder that holds other entries and no mark
is not the project's: it is refused, naming what is in it, and nothing in it
is touched. Runs written before marks existed (committed stages, a lock file,
nothing else at the top) are adopted: they get a mark.

>>> import tempfile, pyarrow.fs as pafs
>>> fs, root = pafs.LocalFileSystem(), tempfile.mkdtemp()
>>> mark = claim(fs, root)
>>> mark.format, read_mark(fs, root) == mark
('gigpo-run', True)
>>> with open(f"{root}/../notes.txt", "w") as f: _ = f.write("mine")
>>> claim(fs, f"{root}/..")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
storage.errors.ForeignDirectory: ...: not empty and not a run (no _RUN.json); it holds ...
"""
from __future__ import annotations

import dataclasses
import json
import time
import uuid

import pyarrow.fs as pafs

from storage import shards
from storage.errors import CorruptManifest, ForeignDirectory
from storage.lock import LOCK_NAME
from storage.manifest import MANIFEST_NAME

MARK_NAME = "_RUN.json"
FORMAT = "gigpo-run"
VERSION = 1
# Top-level entries a driver writes; a folder of only these with a committed stage is a run made before marks.
RUN_ENTRIES = frozenset({LOCK_NAME, MARK_NAME, "rounds", "configs", "games", "base_model", "base_model.json",
                         "metrics.jsonl", "tensorboard", "wandb", "report"})


@dataclasses.dataclass(frozen=True)
class RunMark:
    run_id: str  # 12 hex digits drawn when the run was made; Dask task keys carry it
    created_at: str  # local time the run was made
    format: str = FORMAT
    version: int = VERSION


def read_mark(fs: pafs.FileSystem, root: str) -> RunMark | None:
    """The run's mark, None when it has none; ``CorruptManifest`` when it is unreadable or not ours."""
    path = f"{root}/{MARK_NAME}"
    try:
        with fs.open_input_stream(path) as src:
            raw = src.read()
    except FileNotFoundError:
        return None
    try:
        mark = RunMark(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise CorruptManifest(f"{path}: unreadable run mark ({exc})") from exc
    if mark.format != FORMAT or mark.version > VERSION:
        raise CorruptManifest(f"{path}: a {mark.format!r} run of version {mark.version}; this project reads "
                              f"{FORMAT!r} up to version {VERSION}")
    return mark


def check_claimable(fs: pafs.FileSystem, root: str) -> None:
    """Raise ``ForeignDirectory`` unless ``root`` is missing, empty (but a lock), marked, or an unmarked run;
    writes nothing."""
    if read_mark(fs, root) is not None:
        return
    entries = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)))
    if set(entries) <= {LOCK_NAME} or (set(entries) <= RUN_ENTRIES and _has_commit(fs, root)):
        return
    foreign = [e for e in entries if e not in RUN_ENTRIES] or entries
    raise ForeignDirectory(f"{root}: not empty and not a run (no {MARK_NAME}); it holds "
                           + ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                           + "; choose a new or empty run_dir")


def claim(fs: pafs.FileSystem, root: str) -> RunMark:
    """Mark ``root`` as a run unless it is one (``check_claimable`` first); its mark."""
    check_claimable(fs, root)
    mark = read_mark(fs, root)
    if mark is None:
        mark = RunMark(run_id=uuid.uuid4().hex[:12], created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        shards.put_atomic(fs, f"{root}/{MARK_NAME}", json.dumps(dataclasses.asdict(mark)).encode())
    return mark


def _has_commit(fs: pafs.FileSystem, root: str) -> bool:
    found = fs.get_file_info(pafs.FileSelector(f"{root}/rounds", recursive=True, allow_not_found=True))
    return any(i.base_name == MANIFEST_NAME for i in found)
