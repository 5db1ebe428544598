"""The run lock: one driver writes a run at a time.

On a local disk the lock is an ``fcntl.flock`` on ``RUN/_LOCK``: the kernel
drops it when the holder dies, even by SIGKILL, so a crashed driver never
blocks its own rerun.

On S3 (``s3://``) it is the object ``RUN/_LOCK``, holding its owner and a
random token, created by a conditional put (``If-None-Match: *``) that one
driver wins; release deletes it only while it is still ours (``If-Match`` on
its ETag). The lock goes through boto3 to the endpoint, region and keys of
the run's pyarrow ``S3FileSystem``: those of the run URI
(``s3://bucket/run?endpoint_override=host:port&scheme=http``) or, where it
names none, the ``AWS_*`` environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...) and AWS config files, which both libraries read.
A lock left by a dead process of this host is reclaimed: deleted if its ETag
is still the one read, then created by a conditional put again, so of two
drivers reclaiming it one wins. On a store that ignores ``If-Match`` on
delete, a driver may delete the lock the other just took and both hold it.
Any other lock must be removed by hand (the error says which object).

Other non-local filesystems (``gs://``, ``hdfs://``, fsspec's) offer no
atomic create: locking a run there raises ``RunNotWritable``. ``memory://``
(one process: tests) keeps a lock file written after a check.

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
import uuid

import pyarrow.fs as pafs

from storage.errors import RunLocked, RunNotWritable
from storage.uri import is_local, is_memory

LOCK_NAME = "_LOCK"
_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict")  # 412, or 409 while another put is in flight
_GONE = ("NoSuchKey", "404")


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


def _stale(holder: dict) -> bool:
    """True for a lock of a process of this host that no longer runs."""
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))


class RunLock:
    """Context manager holding a run's lock; raises RunLocked naming the holder."""

    def __init__(self, fs: pafs.FileSystem, root: str):
        self.fs, self.path, self._fd, self._s3 = fs, f"{root}/{LOCK_NAME}", None, None

    def __enter__(self) -> "RunLock":
        if not (is_local(self.fs) or is_memory(self.fs) or isinstance(self.fs, pafs.S3FileSystem)):
            raise RunNotWritable(f"{self.path}: the {self.fs.type_name} filesystem offers no atomic create, so no "
                                 "driver can lock the run; use a local or shared POSIX path (NFS/Lustre) or s3://")
        try:
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        except OSError as exc:
            raise RunNotWritable(f"{self.path.rsplit('/', 1)[0]}: cannot create the run directory ({exc})") from exc
        if is_local(self.fs):
            self._lock_local()
        elif is_memory(self.fs):
            self._lock_memory()
        else:
            self._lock_s3()
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._s3 is not None:
            self._s3.release()
            self._s3 = None
        elif is_memory(self.fs):
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

    def _lock_memory(self) -> None:
        if self.fs.get_file_info(self.path).type == pafs.FileType.File:
            with self.fs.open_input_stream(self.path) as src:
                holder = json.loads(src.read() or b"{}")
            if not _stale(holder):
                self._refuse(json.dumps(holder))
        with self.fs.open_output_stream(self.path) as out:
            out.write(json.dumps(_owner()).encode())

    def _lock_s3(self) -> None:
        lock, holder = _S3Lock(self.fs, self.path), {}
        for _ in range(3):  # put again after a lock released, or a dead owner's lock deleted, since our last put
            if lock.create():
                self._s3 = lock
                return
            holder, etag = lock.read()
            if etag is None:
                continue
            if not _stale(holder):
                break
            lock.delete(etag)
        self._refuse(json.dumps(holder))


class _S3Lock:
    """The lock object ``path`` (``bucket/key``) of an ``S3FileSystem``, through boto3 and conditional requests."""

    def __init__(self, fs: pafs.S3FileSystem, path: str):
        try:
            import boto3
        except ImportError as exc:
            raise RunNotWritable(f"{path}: a lock on s3:// needs boto3 (the s3 extra: pip install boto3)") from exc
        opts = fs.__reduce__()[1][0]  # pyarrow shows an S3FileSystem's options only to pickle
        endpoint = opts["endpoint_override"]
        if endpoint and "://" not in endpoint:
            endpoint = f"{opts['scheme']}://{endpoint}"
        self.client = boto3.client("s3", endpoint_url=endpoint or None, region_name=opts["region"] or None,
                                   aws_access_key_id=opts["access_key"], aws_secret_access_key=opts["secret_key"],
                                   aws_session_token=opts["session_token"])
        self.path, self.token = path, uuid.uuid4().hex
        self.bucket, self.key = path.split("/", 1)

    def _call(self, method: str, expected: tuple[str, ...], **kwargs) -> dict | None:
        """The response of ``method`` on the lock object; None for an error whose code is ``expected``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=self.key, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in expected:
                return None
            raise RunNotWritable(f"{self.path}: cannot {method.split('_')[0]} the run's lock ({exc})") from exc

    def create(self) -> bool:
        """True when this put created the lock; False when another exists."""
        body = json.dumps(_owner() | {"token": self.token}).encode()
        return self._call("put_object", _TAKEN, Body=body, IfNoneMatch="*") is not None

    def read(self) -> tuple[dict, str | None]:
        """(owner, ETag) of the lock; ({}, None) when there is none."""
        got = self._call("get_object", _GONE)
        return (json.loads(got["Body"].read() or b"{}"), got["ETag"]) if got else ({}, None)

    def delete(self, etag: str) -> None:
        """Delete the lock if it is still the version ``etag`` (else leave it)."""
        self._call("delete_object", _TAKEN + _GONE, IfMatch=etag)

    def release(self) -> None:
        holder, etag = self.read()
        if etag is not None and holder.get("token") == self.token:
            self.delete(etag)
