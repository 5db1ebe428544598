"""Crash and resume on real processes: the driver SIGKILLed (with its whole process group) during each
stage in turn, each kill in a rerun of the one before, a Dask worker killed mid-collect, what a killed driver
leaves in TMPDIR, and Ctrl-C.

    .venv/bin/python -m pytest tests/pipeline/test_round_crash.py -q
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import dask
import polars as pl
import psutil
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

import storage
from pipeline.envs import AlfworldEnvConfig, PoolConfig, generate_games
from pipeline.models.tiny_model import make_tiny_model
from pipeline.policy import PolicyConfig, SamplingConfig
from pipeline.rollout import RolloutConfig
from pipeline.runtime.scratch import run_key
from pipeline.stages.collect import collect
from tests.pipeline.round_helpers import (
    CRASH,
    DRIVER_STAGE,
    KEY,
    ROUND_STAGES,
    Driver,
    check_round_tables,
    driver_args,
    group_alive,
    run_to_end,
    tables,
    wait_group_gone,
)

TRAINER = ["-m", "trainer"]


def _stamps(run: storage.Run) -> dict[str, tuple]:
    """Per committed stage of round 0: its manifest's ``created_at`` and the mtime of each file it names."""
    out = {}
    for stage in ROUND_STAGES:
        manifest = run.manifest(0, stage)
        if manifest is not None:
            folder = Path(run.stage_dir(0, stage))
            files = {f.path: (folder / f.path).stat().st_mtime_ns for f in manifest.files}
            out[stage] = (manifest.created_at, (folder / "_MANIFEST.json").stat().st_mtime_ns, files)
    return out


def _wait_for(check, driver: Driver, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline and driver.proc.poll() is None, f"never saw {what}:\n{driver.output}"
        time.sleep(0.001)


def _trainer_running(pgid: int) -> bool:
    for proc in group_alive(pgid):
        try:
            if proc.cmdline()[1:3] == TRAINER:
                return True
        except psutil.Error:
            pass
    return False


# The first file each stage writes, relative to round 0's folder: collect writes batch 0 of 2, then batch 1;
# the advantage stage writes an advantages and an anchor_groups shard per steps shard, then anchor_stats, then commits.
FIRST_FILE = {"collect": "trajectories/steps/batch-000000.parquet",
              "advantage": "advantages/advantages/a00000.parquet"}


def _mid_stage(stage: str, driver: Driver, run_dir: Path, ref_seconds: dict) -> None:
    """Return once ``stage`` is under way: its first shard is written, or its trainer process runs, ..."""
    driver.wait_line(f"round 0: {stage} ...")
    if stage in FIRST_FILE:
        shard = run_dir / "rounds/000000" / FIRST_FILE[stage]
        _wait_for(shard.exists, driver, shard.name)
    elif stage == "train":
        _wait_for(lambda: _trainer_running(driver.proc.pid), driver, "the trainer process")
        time.sleep(0.5)
    else:
        time.sleep(0.3 * ref_seconds[stage])


def _kill_during(stage: str, args: list[str], run_dir: Path, ref_seconds: dict) -> list[str]:
    """Start a driver on the run, SIGKILL its group once ``stage`` is under way; its 'round 0:' lines."""
    driver = Driver(args)
    try:
        _mid_stage(stage, driver, run_dir, ref_seconds)
        left = driver.kill()
    finally:
        driver.cleanup()
    assert not left, f"still running after SIGKILL of the group: {[p.pid for p in left]}"
    return [line for line in driver.output.splitlines() if line.startswith("round 0: ")]


def test_driver_killed_during_each_stage_in_turn_resumes_to_the_same_rows(reference, tmp_path):
    """One run, killed during collect, then (rerun) during advantage, train and evaluate, then run to the end:
    each rerun skips what is committed and redoes the stage it was killed in; the tables equal the reference."""
    ref_tables, ref_seconds, _ = reference
    run_dir = tmp_path / "run"
    args = driver_args(run_dir, *CRASH)
    order, committed = list(DRIVER_STAGE), {}
    for i, stage in enumerate(order):
        printed = _kill_during(stage, args, run_dir, ref_seconds)
        done_before = order[:max(i - 1, 0)]  # committed by earlier drivers; stage i - 1 was killed and redone
        assert [line for line in printed if line.endswith("(committed)")] == [
            f"round 0: {s} (committed)" for s in done_before], printed
        now = _stamps(storage.open_run(str(run_dir)))
        assert sorted(now) == sorted(DRIVER_STAGE[s] for s in order[:i]), f"killed too late: {printed}"
        assert {s: now[s] for s in committed} == committed  # committed stages were not redone
        committed = now

    code, out = run_to_end(args)
    assert code == 0, out
    printed = [line for line in out.splitlines() if line.startswith("round 0: ") and "stage seconds" not in line]
    assert printed == [f"round 0: {s} (committed)" for s in order[:-1]] + ["round 0: evaluate ..."]
    run = storage.open_run(str(run_dir))
    after = _stamps(run)
    assert sorted(after) == sorted(ROUND_STAGES)
    assert {s: after[s] for s in committed} == committed

    check_round_tables(run, 0)
    got = tables(run, [0])
    for name in ("steps", "episodes", "advantages", "anchor_stats", "anchor_groups", "evaluation"):
        assert_frame_equal(got[name], ref_tables[name], check_exact=True)
    assert got["steps"].select(pl.struct(KEY).is_unique().all()).item()
    assert [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [0]


def _executing(dask_worker) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.tasks.values() if ts.state == "executing"]


def _starts(key: str, dask_scheduler=None) -> int:
    """How often the scheduler sent task ``key`` to a worker."""
    return sum(1 for t in dask_scheduler.transition_log if str(t[0]) == key and t[2] == "processing")


def test_worker_killed_mid_collect_is_retried_without_duplicates(tmp_path):
    G, groups = 2, 4
    tiny = str(make_tiny_model(tmp_path / "tiny", seed=0))
    games = generate_games(str(tmp_path / "games"), games=2, seed=0, max_receptacles=5)
    tasks = [games[g % 2] for g in range(groups)]
    config = RolloutConfig(group_size=G, groups_per_batch=1, sampling=SamplingConfig(max_new_tokens=16, seed=0),
                           env=AlfworldEnvConfig(max_steps=3), pool=PoolConfig(workers=1),
                           policy=PolicyConfig(num_threads=1), progress=False)
    run = storage.open_run(str(tmp_path / "run"))
    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        result: dict = {}
        orphans: list = []
        collector = threading.Thread(target=lambda: result.update(
            manifest=_try(collect, client, run, 0, tiny, tasks, config)), daemon=True)
        collector.start()
        pids = client.run(os.getpid)
        deadline = time.monotonic() + 120
        while True:  # a worker that plays a rollout task now and half a second later, its env pool up: kill it
            assert time.monotonic() < deadline and collector.is_alive(), result
            busy = {a: k for a, k in client.run(_executing).items() if any(x.startswith("collect-") for x in k)}
            if busy:
                victim, keys = sorted(busy.items())[0]
                time.sleep(0.5)
                orphans = psutil.Process(pids[victim]).children(recursive=True)  # its env pool, once started
                if orphans and client.run(_executing, workers=[victim])[victim] == keys:
                    break
            time.sleep(0.05)
        pid = pids[victim]
        assert collector.is_alive()  # mid-collect
        os.kill(pid, signal.SIGKILL)
        collector.join(240)
        assert not collector.is_alive()
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
        (key,) = keys
        assert client.run_on_scheduler(_starts, key) == 2  # started, its worker died, started again
    _, alive = psutil.wait_procs(orphans, timeout=15)
    for proc in alive:
        proc.kill()
    assert not alive, f"children of the killed worker outlived it: {[p.pid for p in alive]}"

    manifest = result["manifest"]
    assert not isinstance(manifest, BaseException), manifest
    assert sorted(f.path for f in manifest.files) == sorted(f"{t}/batch-{b:06d}.parquet" for t in ("steps", "episodes")
                                                            for b in range(groups))
    episodes = run.read("episodes", [0]).sort("episode_id")
    assert episodes["episode_id"].to_list() == list(range(groups * G))
    assert episodes["group_id"].to_list() == [g for g in range(groups) for _ in range(G)]
    steps = run.read("steps", [0]).sort(KEY)
    assert steps.select(KEY).rows() == [(e, s) for e in range(groups * G) for s in range(3)]


def _try(fn, *args):
    try:
        return fn(*args)
    except BaseException as exc:  # handed to the test thread
        return exc


@pytest.fixture()
def own_tmpdir(tmp_path, monkeypatch):
    """A fresh TMPDIR for the drivers a test starts (torch's compile cache, made at import, elsewhere).

    Short, unlike ``tmp_path``: the env processes' fork server listens on a Unix socket under it.
    """
    tmp = Path(tempfile.mkdtemp(prefix="t-"))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    yield tmp
    shutil.rmtree(tmp)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_next_driver_removes_the_temp_files_a_killed_driver_left_and_nothing_else(own_tmpdir, tmp_path):
    tmp, run_dir = own_tmpdir, tmp_path / "run"
    key = run_key(str(run_dir))
    kept = ["foreign", f"gigpo-{key}-{os.getpid()}-x",  # a folder of the run whose owner is alive
            f"gigpo-{run_key(str(tmp_path / 'other'))}-{_dead_pid()}-x"]  # another run's
    for name in kept:
        (tmp / name).mkdir()
    args = driver_args(run_dir, *CRASH)
    driver = Driver(args)
    try:
        _mid_stage("train", driver, run_dir, {})
        assert not driver.kill()
    finally:
        driver.cleanup()
    (left,) = tmp.glob(f"gigpo-{key}-{driver.proc.pid}-*")
    assert list(left.glob(f"gigpo-{key}-*/trainer.yaml")) and list(left.glob("pymp-*"))  # a rank's, a worker's

    code, out = run_to_end(args)
    assert code == 0, out
    assert sorted(p.name for p in tmp.iterdir()) == sorted(kept)


def test_ctrl_c_stops_the_driver_with_one_line_and_a_rerun_resumes(own_tmpdir, tmp_path):
    """SIGINT to the driver's process group, as a terminal's Ctrl-C: the LocalCluster's workers get it too."""
    tmp, run_dir = own_tmpdir, tmp_path / "run"
    args = driver_args(run_dir, *CRASH)
    with open(tmp_path / "stderr", "w") as err:
        driver = Driver(args, stderr=err)
        try:
            _mid_stage("train", driver, run_dir, {})
            os.killpg(driver.proc.pid, signal.SIGINT)
            code = driver.wait(120)
            assert not wait_group_gone(driver.proc.pid)
        finally:
            driver.cleanup()
    stderr = (tmp_path / "stderr").read_text()
    assert code == 130, driver.output + stderr
    assert stderr.splitlines()[-1] == "interrupted in round 0, stage train; rerun the same command to resume"
    assert "Traceback" not in driver.output + stderr and "CancelledError" not in stderr, stderr
    assert list(tmp.iterdir()) == []
    run = storage.open_run(str(run_dir))
    assert run.is_committed(0, "advantages") and not run.is_committed(0, "checkpoint")

    code, out = run_to_end(args)
    assert code == 0, out
    assert [line for line in out.splitlines() if line.startswith("round 0: ") and "stage seconds" not in line] == [
        "round 0: collect (committed)", "round 0: advantage (committed)", "round 0: train ...",
        "round 0: evaluate ..."]
    assert list(tmp.iterdir()) == []
