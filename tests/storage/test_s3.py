"""Runs on a real S3-compatible server (moto): the lock excludes, tables round-trip, the CLI reads them."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

import storage
from storage.cli import main
from storage.lock import LOCK_NAME
from tests.child_env import ROOT, child_env

# Takes the lock when the test says "go" (all at once), holds it until the test sends a line, then releases it.
CONTEND = """
import sys, storage
run = storage.open_run(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    with run.lock():
        print("locked", flush=True)
        sys.stdin.readline()
except storage.RunLocked as exc:
    print("refused", exc, flush=True)
"""


def _lock_object(uri: str) -> tuple[pafs.FileSystem, str]:
    fs, root = storage.uri.resolve(uri)
    return fs, f"{root}/{LOCK_NAME}"


def _lock_exists(uri: str) -> bool:
    fs, path = _lock_object(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def test_drivers_started_at_once_one_holds_the_lock(s3_run):
    drivers = [subprocess.Popen([sys.executable, "-c", CONTEND, s3_run], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=child_env())
               for _ in range(3)]
    try:
        assert [d.stdout.readline() for d in drivers] == ["ready\n"] * 3
        for d in drivers:
            d.stdin.write("go\n")
            d.stdin.flush()
        outcomes = [d.stdout.readline() for d in drivers]
        holders = [d for d, line in zip(drivers, outcomes) if line == "locked\n"]
        assert len(holders) == 1, outcomes
        refused = [line for line in outcomes if line != "locked\n"]
        assert [line.split("(")[0] for line in refused] == \
            [f"refused {_lock_object(s3_run)[1]}: the run is locked by another driver "] * 2
        assert all(f'"pid": {holders[0].pid},' in line for line in refused), refused
        holders[0].stdin.write("release\n")
        holders[0].stdin.flush()
        assert [(d.wait(timeout=60), d.stderr.read()) for d in drivers] == [(0, "")] * 3
    finally:
        for d in drivers:
            d.kill()
            d.wait()
    assert not _lock_exists(s3_run)


def test_second_lock_is_refused_naming_the_holder_and_release_leaves_anothers_lock(s3_run):
    first, second = storage.open_run(s3_run).lock(), storage.open_run(s3_run).lock()
    first.__enter__()
    with pytest.raises(storage.RunLocked, match=rf'the run is locked by another driver \(.*"pid": {os.getpid()},'):
        with storage.open_run(s3_run).lock():
            pass
    fs, path = _lock_object(s3_run)
    fs.delete_file(path)  # removed by hand while held
    second.__enter__()
    first.__exit__(None, None, None)  # no longer its lock: left alone
    assert _lock_exists(s3_run)
    second.__exit__(None, None, None)
    assert not _lock_exists(s3_run)


def test_dead_drivers_lock_is_reclaimed(s3_run):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    fs, path = _lock_object(s3_run)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}).encode())
    with storage.open_run(s3_run).lock():
        with fs.open_input_stream(path) as src:
            assert json.loads(src.read())["pid"] == os.getpid()


def test_tables_round_trip_and_cli_reads_them(s3_run, capsys):
    assert main(["demo", s3_run, "--groups", "2", "--shards", "2"]) == 0
    assert "│ 0     ┆ trajectories ┆ 0      ┆ episodes ┆ 32   ┆" in capsys.readouterr().out
    run = storage.open_run(s3_run)
    assert run.rounds() == [0]
    assert run.scan("episodes", rounds=[0]).collect().height == 32
    assert main(["show", s3_run, "--table", "steps", "--round", "0", "--head", "2"]) == 0
    assert "shape: (2, 18)" in capsys.readouterr().out
    assert main(["verify", s3_run]) == 0
    assert capsys.readouterr().out == "4 committed file(s) match their manifests\n"
