"""Resident trainer ranks in the round driver, on real processes: three rounds trained by one resident trainer
process equal three rounds with a fresh trainer process each, to the last bit (every table, every checkpoint
tensor, every step metric but wall-clock ones); a resident SIGKILLed mid-round and another between rounds are
started again and the run ends with the same tables; a driver on a cluster it did not start leaves no
resident behind.

    .venv/bin/python -m pytest tests/pipeline/test_round_resident_trainer.py -q
"""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import dask
import psutil
import pytest
import torch
from distributed import LocalCluster
from polars.testing import assert_frame_equal
from safetensors.torch import load_file

import storage
from tests.pipeline.round_helpers import Driver, driver_args, gone, run_to_end, tables
from tests.pipeline.test_round_recovery import _wait_for

ROUNDS = [0, 1, 2]
# Three tiny rounds on one worker; an entropy bonus so every step moves the weights (no episode of 3 steps scores,
# so the advantages are all 0) and 3 optimizer steps per round, held-out evaluation after each round.
ARGS = ["rounds=3", "cluster.n_workers=1", "evaluation.before_training=false", "trainer.entropy_coeff=0.01",
        "trainer.lr=1e-3", "trainer.mini_batch_size=4", "trainer.micro_batch_size=2"]
WALL = ("tokens_per_s", "step_time_s", "mfu", "stage_seconds", "env_steps_per_s", "rollout_tokens_per_s",
        "advantage_steps_per_s_per_core", "train_tokens_per_s", "generate_seconds", "env_seconds",
        "policy_load_seconds")  # wall-clock figures: the only ones that may differ


class Trainers:
    """Every ``python -m trainer`` process of a run, in the order first seen (polled every 20 ms); a process the
    trainer forks carries its command line until it execs, and is not counted."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.seen, self._stop = str(run_dir), {}, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "Trainers":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            found = {proc.pid: proc for proc in psutil.process_iter(["cmdline", "status", "ppid"])
                     if (cmd := proc.info["cmdline"] or [])[1:3] == ["-m", "trainer"]
                     and self.run_dir in " ".join(cmd) and proc.info["status"] != "zombie"}
            for pid, proc in found.items():
                if proc.info["ppid"] not in found:  # not a trainer's child between its fork and exec
                    self.seen.setdefault(pid, proc)

    def running(self) -> psutil.Process:
        (proc,) = [p for p in self.seen.values() if p.is_running() and p.status() != "zombie"]
        return proc


def _outcome(run_dir: Path) -> dict:
    """What a run committed: its tables, checkpoint tensors and step metrics, its round records but wall clocks."""
    run = storage.open_run(str(run_dir))
    folders = [Path(run.stage_dir(r, "checkpoint")) for r in ROUNDS]
    steps = [[json.loads(line) for line in (f / "train_metrics.jsonl").read_text().splitlines()] for f in folders]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"tables": tables(run, ROUNDS), "weights": [load_file(str(f / "model.safetensors")) for f in folders],
            "steps": [[_timeless(m) for m in ms] for ms in steps], "records": [_timeless(m) for m in records]}


def _timeless(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in WALL}


def _assert_same(got: dict, want: dict) -> None:
    for name, frame in want["tables"].items():
        assert_frame_equal(got["tables"][name], frame, check_exact=True)
    for r, (a, b) in enumerate(zip(got["weights"], want["weights"])):
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in b), f"round {r}'s checkpoint differs"
    assert got["steps"] == want["steps"] and got["records"] == want["records"]
    assert [len(s) for s in want["steps"]] == [3, 3, 3]


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """The three rounds with ``trainer.resident=false``: what they commit; one trainer process per round."""
    run_dir = tmp_path_factory.mktemp("cold") / "run"
    with Trainers(run_dir) as trainers:
        code, out = run_to_end(driver_args(run_dir, *ARGS, "trainer.resident=false"), timeout=600)
    assert code == 0, out
    assert len(trainers.seen) == 3, [p.info for p in trainers.seen.values()]
    outcome = _outcome(run_dir)
    first, last = outcome["weights"][0], outcome["weights"][2]
    assert max((last[k] - first[k]).abs().max().item() for k in first) > 1e-3  # the rounds trained
    return outcome


def test_three_rounds_on_one_resident_trainer_equal_three_cold_ones(cold, tmp_path):
    run_dir = tmp_path / "run"
    with Trainers(run_dir) as trainers:
        code, out = run_to_end(driver_args(run_dir, *ARGS), timeout=600)
    assert code == 0, out
    assert len(trainers.seen) == 1, out  # one process trained the three rounds
    kept = [line for line in out.splitlines() if line.endswith("engine kept in memory from the round before")]
    assert len(kept) == 2, out  # rounds 1 and 2 train on the engine round 0 left
    assert [line for line in out.splitlines() if line.startswith("warning")] == []
    _assert_same(_outcome(run_dir), cold)


def test_resident_trainers_killed_mid_round_and_between_rounds_are_started_again(cold, tmp_path):
    run_dir = tmp_path / "run"
    run = storage.open_run(str(run_dir))
    driver = Driver(driver_args(run_dir, *ARGS))
    try:
        with Trainers(run_dir) as trainers:
            # Mid-round: round 1's old and reference log-probs are stored, its checkpoint is not committed yet.
            stored = run_dir / "rounds/000001/trainer_state/precomputed.pt"
            _wait_for(stored.exists, stored.name, driver)
            os.kill(trainers.running().pid, signal.SIGKILL)
            assert not run.is_committed(1, "checkpoint"), "killed too late"
            # Between rounds: the resident that trained round 1 again, while round 2 collects.
            driver.wait_line("round 2: collect ...")
            os.kill(trainers.running().pid, signal.SIGKILL)
            assert driver.wait(600) == 0, driver.output
    finally:
        driver.cleanup()
    pids = list(trainers.seen)
    assert len(pids) == 3  # started for round 0, again for round 1, again for round 2
    assert [line for line in driver.output.splitlines() if line.startswith("warning")] == [
        f"warning: round 1: resident process {pids[0]} was killed by signal 9; stopping the other ranks and "
        "training again on the live workers",
        "warning: round 2: a resident trainer ended since the last round; starting the ranks again"], driver.output
    _assert_same(_outcome(run_dir), cold)


def test_a_driver_that_ends_on_a_cluster_it_did_not_start_takes_its_resident_trainer_along(tmp_path):
    """As ``dask-submit`` runs a driver: its client's end releases the holder task, which kills the trainer."""
    run_dir = tmp_path / "run"
    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Trainers(run_dir) as trainers:
            code, out = run_to_end(driver_args(run_dir, *ARGS[1:], "rounds=1",
                                               f"cluster.scheduler={cluster.scheduler_address}"), timeout=300)
            assert code == 0, out
        (proc,) = trainers.seen.values()
        assert gone(proc, 5.0), f"the resident trainer {proc.pid} outlived its driver"
