"""The run lock: one driver writes a run at a time.

On a local disk the lock is an ``fcntl.flock`` on ``RUN/_LOCK``: the kernel
drops it when the holder dies, even by SIGKILL, so a crashed driver never
blocks its own rerun. On other filesystems (object stores) it is a lock file
holding its owner; a lock left by a dead process of this host is reclaimed,
any other must be removed by hand (the error says which file).

A run directory that cannot be written (a read-only mount) is still locked
when its lock file exists (``flock`` needs no write access), so a driver
finds a committed run done; its first write raises ``RunNotWritable``.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time

import pyarrow.fs as pafs

from storage.errors import RunLocked, RunNotWritable
from storage.uri import is_local

LOCK_NAME = "_LOCK"


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Context manager holding a run's lock; raises RunLocked naming the holder."""

    def __init__(self, fs: pafs.FileSystem, root: str):
        self.fs, self.path, self._fd = fs, f"{root}/{LOCK_NAME}", None

    def __enter__(self) -> "RunLock":
        try:
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        except OSError as exc:
            raise RunNotWritable(f"{self.path.rsplit('/', 1)[0]}: cannot create the run directory ({exc})") from exc
        if is_local(self.fs):
            self._lock_local()
        else:
            self._lock_remote()
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif not is_local(self.fs):
            self.fs.delete_file(self.path)

    def _refuse(self, holder: str) -> None:
        raise RunLocked(f"{self.path}: the run is locked by another driver ({holder}); "
                        "wait for it to finish or stop it")

    def _lock_local(self) -> None:
        writable = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not os.path.isfile(self.path):
                raise RunNotWritable(f"{self.path}: cannot create the run's lock file ({exc.strerror}); "
                                     "a driver needs a writable run directory") from exc
            fd, writable = os.open(self.path, os.O_RDONLY), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            self._refuse(holder)
        if writable:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(_owner()).encode())
            except OSError:
                pass  # the owner is only named to a refused driver; a full disk fails the first real write
        self._fd = fd

    def _lock_remote(self) -> None:
        if self.fs.get_file_info(self.path).type == pafs.FileType.File:
            with self.fs.open_input_stream(self.path) as src:
                holder = json.loads(src.read() or b"{}")
            same_host = holder.get("host") == socket.gethostname()
            if not (same_host and not _alive(int(holder.get("pid", -1)))):
                self._refuse(json.dumps(holder))
        try:
            with self.fs.open_output_stream(self.path) as out:
                out.write(json.dumps(_owner()).encode())
        except OSError as exc:
            raise RunNotWritable(f"{self.path}: cannot write the run's lock file ({exc})") from exc
