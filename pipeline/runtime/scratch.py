"""Temporary folders tied to a run and to the process that owns them, and removing what killed processes left.

Each such folder is named ``gigpo-<key>-<pid>-XXXXXXXX``: ``key`` names the run on
this host (``run_key``), ``pid`` the owner process. The driver makes one for itself
and points ``TMPDIR`` at it (``run_tmpdir``), so every process it starts
(LocalCluster workers, env processes, trainers) and every library asking
``tempfile`` (multiprocessing's ``pymp-*``, fast-downward's copy of
``libdownward.so`` per env, Dask's scratch space) writes under it; a train rank
gives its trainer one of its own. Each is removed when its block ends. A process
killed by SIGKILL cannot remove its folder: the next driver of the run removes
those whose owner is gone (``remove_leftovers``), and nothing else. Names stay
short: multiprocessing's forkserver listens on a Unix socket under ``TMPDIR``,
whose path may not exceed 107 bytes.

>>> with scratch("runs/x") as path:
...     os.path.basename(path).startswith(f"gigpo-{run_key('runs/x')}-{os.getpid()}-")
True
>>> os.path.exists(path)
False
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
from typing import Iterator

import psutil

PREFIX = "gigpo-"


def run_key(run_uri: str) -> str:
    """A short name of the run on this host (a local path counts as its absolute path)."""
    scheme, _, rest = run_uri.rpartition("://")
    where = os.path.abspath(rest) if scheme in ("", "file") else run_uri
    return hashlib.sha256(f"{socket.gethostname()}\0{where}".encode()).hexdigest()[:8]


@contextlib.contextmanager
def scratch(run_uri: str) -> Iterator[str]:
    """A fresh folder of this process for run ``run_uri`` under the current temp dir, removed when the block ends."""
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{run_key(run_uri)}-{os.getpid()}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def run_tmpdir(run_uri: str) -> Iterator[str]:
    """Within the block, this process and those it starts keep their temporary files in a folder of their own.

    It first removes what killed processes of the run left (the caller holds the run's lock).
    """
    remove_leftovers(run_uri)
    with scratch(run_uri) as path:
        outer, outer_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
        os.environ["TMPDIR"] = tempfile.tempdir = path
        try:
            yield path
        finally:
            if outer is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = outer
            tempfile.tempdir = outer_tempdir


def remove_leftovers(run_uri: str) -> list[str]:
    """Remove the temporary folders of run ``run_uri`` whose owner process is gone from this host; their paths."""
    base = tempfile.gettempdir()
    pattern = re.compile(rf"{PREFIX}{run_key(run_uri)}-(\d+)-")
    removed = []
    with os.scandir(base) as entries:
        for entry in entries:
            found = pattern.match(entry.name)
            if found and entry.is_dir(follow_symlinks=False) and not psutil.pid_exists(int(found.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return sorted(removed)
