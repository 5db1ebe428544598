"""Recovery on real processes around the base model and the train stage: the driver SIGKILLed while it
builds the base model, the Dask worker under the trainer SIGKILLed, the driver SIGKILLed mid-train (its
trainer must die with it) and right after a round's metrics commit (derived outputs are completed).

Both tests start from a copy of the reference run without its later stages, so only those are redone.

    .venv/bin/python -m pytest tests/pipeline/test_round_recovery.py -q
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import dask
import psutil
from distributed import LocalCluster
from polars.testing import assert_frame_equal

import storage
from tests.pipeline.round_helpers import CRASH, Driver, check_round_tables, driver_args, gone, run_to_end, tables
from tests.pipeline.tracker_files import steps_by_tag

TRAIN_ON = ("checkpoint", "evaluation", "metrics")  # the stages redone from training on


def _copy_run(src: Path, dst: Path, *drop: str) -> Path:
    """The reference run without round 0's stages ``drop`` and its derived outputs (and ``base_model`` if named)."""
    shutil.copytree(src, dst)
    for stage in drop:
        shutil.rmtree(dst / ("rounds/000000/" + stage if stage in TRAIN_ON else stage))
    shutil.rmtree(dst / "tensorboard")
    (dst / "metrics.jsonl").unlink()
    return dst


def _wait_for(check, what: str, driver: Driver, timeout: float = 600.0):
    """Poll ``check`` every millisecond until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline and driver.proc.poll() is None, f"never saw {what}:\n{driver.output}"
        time.sleep(0.001)
    return found


def _trainers(run_dir: Path) -> list[psutil.Process]:
    """Running ``python -m trainer`` processes of this run."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if cmd[1:3] == ["-m", "trainer"] and str(run_dir) in " ".join(cmd) and proc.info["status"] != "zombie":
            found.append(proc)
    return found


def test_killed_base_model_build_worker_under_the_trainer_and_driver_after_metrics(reference, tmp_path):
    ref_tables, _, ref_dir = reference
    run_dir = _copy_run(ref_dir, tmp_path / "run", *TRAIN_ON, "base_model")
    args = driver_args(run_dir, *CRASH)

    # 1. The driver is killed while it builds the base model: no half-built RUN/base_model is left.
    first = Driver(args)
    try:
        _wait_for(lambda: list(run_dir.glob("base_model.tmp-*")), "the base model's build folder", first)
        assert not first.kill()
    finally:
        first.cleanup()
    assert not (run_dir / "base_model").exists()

    # 2. The rerun builds it; the worker running the trainer is killed 1.5 s into training: the driver
    #    trains again on the restarted worker and finishes the round; the killed trainer is gone at once.
    second = Driver(args)
    try:
        (trainer,) = _wait_for(lambda: _trainers(run_dir), "the trainer process", second)
        time.sleep(1.5)
        os.kill(trainer.ppid(), signal.SIGKILL)
        assert gone(trainer, 5.0), f"trainer {trainer.pid} outlived its Dask worker"
        metrics = run_dir / "rounds/000000/metrics/_MANIFEST.json"
        # The driver's main thread (its thread id is its pid) commits the metrics, then logs the round to the
        # trackers within milliseconds: at the lowest priority, a busy machine slows that thread, not this kill.
        os.setpriority(os.PRIO_PROCESS, second.proc.pid, 19)
        _wait_for(metrics.exists, "round 0's metrics commit", second)
        # 3. ... and is killed right after that commit, before its TensorBoard record is written.
        assert not second.kill()
    finally:
        second.cleanup()
    assert "left the cluster; stopping the other ranks and training again on the live workers" in second.output
    record = run_dir / "tensorboard/_logged.json"  # the steps were logged live; the round not yet
    assert not record.exists() or "rounds" not in json.loads(record.read_text()), "killed too late"

    # 4. A rerun has no round to do, but completes the derived outputs from the committed stages.
    code, out = run_to_end(args, timeout=300)
    assert code == 0, out
    assert f"{run_dir}: logged round(s) [0] to the trackers (left unlogged by an earlier driver)" in out
    assert f"{run_dir}: all 1 round(s) are committed; nothing to do" in out
    assert [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [0]
    assert json.loads(record.read_text())["rounds"] == 0
    # round 0's optimizer steps, as its committed train_metrics.jsonl numbers them (a training resumed after
    # its last step records none)
    steps = json.loads((run_dir / "metrics.jsonl").read_text())["train_steps"]
    assert steps_by_tag(run_dir / "tensorboard/rounds")["success_rate"] == [0]
    assert steps_by_tag(run_dir / "tensorboard/train")["train/loss"] == list(range(1, steps + 1)) if steps else True

    run = storage.open_run(str(run_dir))
    check_round_tables(run, 0)
    got = tables(run, [0])
    for name in ("steps", "episodes", "advantages", "anchor_stats", "evaluation"):
        assert_frame_equal(got[name], ref_tables[name], check_exact=True)
    assert _trainers(run_dir) == []


def test_driver_killed_mid_train_takes_its_trainer_along(reference, tmp_path):
    """A driver on a cluster it did not start (as ``dask-submit --detach`` runs it): its trainer must not
    live on to commit the checkpoint behind a later driver's back."""
    run_dir = _copy_run(reference[2], tmp_path / "run", *TRAIN_ON)
    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        driver = Driver(driver_args(run_dir, *CRASH, f"cluster.scheduler={cluster.scheduler_address}"))
        try:
            (trainer,) = _wait_for(lambda: _trainers(run_dir), "the trainer process", driver)
            time.sleep(1.5)
            assert not driver.kill()  # the driver alone: the cluster is not in its process group
        finally:
            driver.cleanup()
        assert gone(trainer, 5.0), f"trainer {trainer.pid} outlived its driver"
        time.sleep(5)
        assert _trainers(run_dir) == []
        assert not storage.open_run(str(run_dir)).is_committed(0, "checkpoint")
