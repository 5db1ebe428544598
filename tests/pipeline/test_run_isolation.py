"""Two runs on one scheduler keep their own results; a run directory holds only what the project wrote."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import storage
from pipeline.driver import main
from tests.pipeline.round_helpers import CONFIG, ROOT, Driver, driver_args, driver_env, run_to_end, wait_group_gone

# Same games seed (so equal game keys would collide), different episode lengths (visible in every table).
CONFIGS = {"a": ["rollout.env.max_steps=4"], "b": ["rollout.env.max_steps=3"]}
BASELINE = ["rounds=0", "evaluation.before_training=true"]  # games, base model, the held-out baseline


def _games(run_dir: Path) -> dict[str, str]:
    """Every generated game file of a run, by path inside the run, with its SHA-256."""
    root = run_dir / "games"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _outcome(run_dir: Path) -> tuple:
    """The run's held-out baseline (episodes' rows) and its games."""
    return storage.open_run(str(run_dir)).read("evaluation").sort("episode_id").rows(), _games(run_dir)


@pytest.fixture
def scheduler(tmp_path):
    """A scheduler and two non-daemonic workers in processes of their own, as `dask scheduler`/`dask worker`."""
    env = driver_env() | {"PYTHONPATH": str(ROOT), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    info = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(info)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(info),
                                    "--nthreads", "1", "--local-directory", str(tmp_path / f"w{i}")],
                                   env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for i in range(2)]
        yield json.loads(info.read_text())["address"]
    finally:
        for p in procs:
            os.killpg(p.pid, 9)
            p.wait(30)
            assert not wait_group_gone(p.pid)


@pytest.mark.slow
def test_two_runs_on_one_scheduler_keep_their_own_results(scheduler, tmp_path):
    alone = {}
    for name, extra in CONFIGS.items():
        code, out = run_to_end(driver_args(tmp_path / f"alone-{name}", *BASELINE, *extra))
        assert code == 0, out
        alone[name] = _outcome(tmp_path / f"alone-{name}")
    assert alone["a"][0] != alone["b"][0]  # the two configs give tables that tell them apart
    drivers = {name: Driver(driver_args(tmp_path / f"shared-{name}", *BASELINE, *extra,
                                        f"cluster.scheduler={scheduler}"))
               for name, extra in CONFIGS.items()}
    try:
        for name, driver in drivers.items():
            assert driver.wait(300) == 0, driver.output
    finally:
        for driver in drivers.values():
            driver.cleanup()
    for name in CONFIGS:
        assert _outcome(tmp_path / f"shared-{name}") == alone[name]


def test_the_driver_refuses_a_folder_that_is_not_a_run_and_touches_nothing(tmp_path, capsys):
    (tmp_path / "base_model").mkdir()
    (tmp_path / "base_model" / "weights_notes.txt").write_text("mine")
    (tmp_path / "rounds" / "000000" / "trajectories").mkdir(parents=True)
    (tmp_path / "rounds" / "000000" / "trajectories" / "mine.txt").write_text("mine")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert main(["--config", CONFIG, f"run_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == (f"error: run_dir: {tmp_path}: not empty and not a run (no _RUN.json); it "
                                       "holds base_model, rounds; choose a new or empty run_dir\n")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
