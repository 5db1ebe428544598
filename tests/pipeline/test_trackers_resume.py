"""The trackers on a real driver: each RL step reaches TensorBoard as it ends, before its round commits; a driver
interrupted once a round has trained, and resumed, leaves every tag with each step once.

    .venv/bin/python -m pytest tests/pipeline/test_trackers_resume.py -q
"""
from __future__ import annotations

import json
import os
import signal

import storage
from pipeline.records import read_train_steps
from tests.pipeline.round_helpers import Driver, driver_args, run_to_end
from tests.pipeline.tracker_files import PPO_KEYS, STEP_KEYS, scalars, steps_by_tag

# Two rounds of 12 steps rows each (round_helpers.TINY) in mini-batches of 4: 3 optimizer steps a round.
TWO = ["rounds=2", "cluster.n_workers=1", "evaluation.before_training=false", "trainer.mini_batch_size=4",
       "trainer.micro_batch_size=2"]


def test_steps_are_logged_live_and_a_resumed_driver_logs_each_point_once(tmp_path):
    run_dir = tmp_path / "run"
    tb, args = run_dir / "tensorboard", driver_args(run_dir, *TWO)
    driver = Driver(args)
    try:
        driver.wait_line("round 1: evaluate ...", timeout=600)
        live = steps_by_tag(tb / "train")["train/loss"]  # round 1 trained; its metrics are not committed
        assert live[:5] == [1, 2, 3, 4, 5] and live in ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6])
        assert steps_by_tag(tb / "rounds")["round"] == [0]
        os.killpg(driver.proc.pid, signal.SIGINT)  # Ctrl-C
        assert driver.wait(120) == 130, driver.output
    finally:
        driver.cleanup()
    record = json.loads((tb / "_logged.json").read_text())
    assert record["rounds"] == 0 and record["train"] >= 5
    # As if the driver had died after flushing its last step but before recording it.
    (tb / "_logged.json").write_text(json.dumps(record | {"train": record["train"] - 1}))

    code, out = run_to_end(args)
    assert code == 0, out
    run = storage.open_run(str(run_dir))
    by_tag = steps_by_tag(tb / "train")
    assert by_tag == {f"train/{k}": [1, 2, 3, 4, 5, 6] for k in sorted(STEP_KEYS + PPO_KEYS)}
    assert scalars(tb / "train", "train/loss")[3:] == [(s, round(m["loss"], 6)) for s, m in
                                                        zip((4, 5, 6), read_train_steps(run, 1))]
    rounds = steps_by_tag(tb / "rounds")
    assert rounds["round"] == [0, 1] and all(steps == sorted(set(steps)) for steps in rounds.values()), rounds
    assert not (tb / "sft").exists()  # no warm start
    assert json.loads((tb / "_logged.json").read_text()) == {"train": 6, "rounds": 1}
