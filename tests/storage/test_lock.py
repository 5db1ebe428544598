"""The run lock: a second driver is refused; a SIGKILLed driver does not block its rerun."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import storage

HOLD = """
import sys, time, storage
with storage.open_run(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(uri):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, uri], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd(), env=os.environ | {"PYTHONPATH": os.pathsep.join(
                                [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_driver_is_refused_and_killed_driver_releases(tmp_path):
    proc = _holder(str(tmp_path))
    try:
        with pytest.raises(storage.RunLocked,
                           match=rf"_LOCK: the run is locked by another driver .*\"pid\": {proc.pid}"):
            with storage.open_run(str(tmp_path)).lock():
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with storage.open_run(str(tmp_path)).lock():
        pass


def test_lock_on_object_store_style_filesystem(tmp_path):
    run = storage.open_run(f"memory://lock-{time.time_ns()}")
    with run.lock():
        with pytest.raises(storage.RunLocked, match="locked by another driver"):
            with storage.open_run(run.uri).lock():
                pass
    with run.lock():  # released on exit
        pass


def test_filesystem_without_atomic_create_is_refused():
    with pytest.raises(storage.RunNotWritable, match=r"^bucket/run/_LOCK: the gcs filesystem offers no atomic create, "
                                                     r"so no driver can lock the run; use a local or shared POSIX "
                                                     r"path \(NFS/Lustre\) or s3://$"):
        with storage.open_run("gs://bucket/run").lock():
            pass
