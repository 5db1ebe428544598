"""Integrity checks of a stage's files against its manifest: sizes, full SHA-256, manifests read by name."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow.fs as pafs

from storage import shards
from storage.errors import CorruptManifest, CorruptShard, StorageError
from storage.manifest import MANIFEST_NAME, Manifest, ShardInfo

THREADS = 8  # parallel manifest reads and checksum checks (hashlib and pyarrow I/O release the GIL)


def size_problems(fs: pafs.FileSystem, folder: str, files: list[ShardInfo]) -> dict[str, str]:
    listing = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    sizes = {i.path[len(folder) + 1:]: i.size for i in listing if i.type == pafs.FileType.File}
    bad = {}
    for f in files:
        path = f"{folder}/{f.path}"
        if f.path not in sizes:
            bad[path] = f"{path}: named in the stage manifest but missing"
        elif sizes[f.path] != f.bytes:
            bad[path] = f"{path}: {sizes[f.path]} bytes, the manifest says {f.bytes} (truncated or replaced)"
    return bad


def full_problems(fs: pafs.FileSystem, folder: str, files: list[ShardInfo]) -> dict[str, str]:
    def problem(f: ShardInfo) -> str | None:
        try:
            shards.verify(fs, folder, f, full=True)
        except StorageError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(min(THREADS, os.cpu_count() or 1)) as pool:
        found = pool.map(problem, files)
        return {f"{folder}/{f.path}": p for f, p in zip(files, found) if p is not None}


def read_manifest(fs: pafs.FileSystem, path: str) -> Manifest | None:
    """The manifest at ``path``, None when there is none; ``CorruptManifest`` naming it when unreadable."""
    try:
        with fs.open_input_stream(path) as src:
            return Manifest.from_json(src.read().decode(), where=path)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CorruptManifest(str(exc)) from exc
    except OSError as exc:
        raise CorruptManifest(f"{path}: cannot read ({exc})") from exc


def verify_stage_dir(path: str, skip: tuple[str, ...] = ()) -> Manifest | None:
    """Check every file of a committed stage directory on this machine (size, SHA-256) before a process loads it.

    For checkpoints, which processes load by path. A directory without a
    manifest is not a stage of a run (a base model): None, nothing checked.
    ``CorruptShard`` lists every bad file. Names ending in one of ``skip`` are
    left for a later call (e.g. weights a process may not need to read).

    A file this process has hashed equal to its manifest entry is not hashed
    again while its inode, size, mtime and ctime stay the same (``_VERIFIED``):
    every write, rename over it or ``utime`` changes one of them. A file changed
    within ``RACY_S`` before it was hashed is not remembered (file times have
    a coarse clock: a second write in the same tick would leave them unchanged).
    """
    path = os.path.abspath(os.fspath(path))
    fs = pafs.LocalFileSystem()
    manifest = read_manifest(fs, f"{path}/{MANIFEST_NAME}")
    if manifest is None:
        return None
    settled = time.time_ns() - int(RACY_S * 1e9)
    # Taken before hashing: a write during the hash shows as a change next time.
    files = [f for f in manifest.files if not f.path.endswith(skip)]
    stats = {f.path: _stat(f"{path}/{f.path}") for f in files}
    todo = [f for f in files if _VERIFIED.get((f"{path}/{f.path}", f.sha256)) != stats[f.path]]
    if bad := full_problems(fs, path, todo):
        raise CorruptShard("\n".join(bad.values()))
    _VERIFIED.update({(f"{path}/{f.path}", f.sha256): stats[f.path] for f in todo if stats[f.path][3] < settled})
    return manifest


RACY_S = 0.1  # above the tick of file times on Linux (1-10 ms)
# (file, SHA-256 it hashed equal to) -> the file's (inode, size, mtime, ctime) when it was hashed, in this process.
_VERIFIED: dict[tuple[str, str], tuple[int, ...]] = {}


def _stat(path: str) -> tuple[int, ...]:
    """Through an open file: on NFS, an open fetches the server's attributes (close-to-open consistency)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
    except OSError:
        return (-1, -1, -1, -1)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
