"""Real filesystems for storage error tests: a size-limited tmpfs (disk full), a read-only bind mount.

Both need ``mount`` (root with CAP_SYS_ADMIN); tests skip where it is refused.
Every mount is undone when its context ends.
"""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not permitted here: {done.stderr.strip()}")


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "256k"):
    """A tmpfs of ``size`` bytes at ``path``: writes past it fail with ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def read_only(source: Path, path: Path):
    """``source`` seen read-only at ``path`` (a bind mount): writes there fail with EROFS."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path) -> None:
    """Write a filler file on ``disk`` until it is full."""
    with open(disk / "filler", "wb", buffering=0) as out, contextlib.suppress(OSError):
        while out.write(b"x" * 4096):
            pass
