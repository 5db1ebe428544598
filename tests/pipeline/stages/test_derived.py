"""Derived outputs are completed from the committed metrics stages at a driver's start, once."""
from __future__ import annotations

import json
import os

import storage
from pipeline.runtime.loggers import LoggingConfig, log_round
from pipeline.stages.derived import complete_derived
from pipeline.stages.record import RoundMetrics, commit_metrics

ON = LoggingConfig(tensorboard=True)


def _events(folder) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("success_rate")]


def test_rounds_a_crash_left_underived_are_completed_once(tmp_path, capsys):
    run = storage.open_run(str(tmp_path))
    for r in (0, 1, 2):
        commit_metrics(run, RoundMetrics(round=r, policy_version=r, success_rate=0.25 * r), "cfg")
    log_round(RoundMetrics(round=0, policy_version=0), ON, str(tmp_path))  # round 0 was logged
    (tmp_path / "metrics.jsonl").write_text("")  # killed while the file had lost rounds 1 and 2
    assert complete_derived(run, ON) == [1, 2]
    assert f"{tmp_path}: logged round(s) [1, 2] to TensorBoard" in capsys.readouterr().out
    assert [json.loads(line)["round"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert json.loads((tmp_path / "tensorboard/_logged_rounds.json").read_text()) == [0, 1, 2]
    assert _events(tmp_path / "tensorboard") == [(0, 0.0), (1, 0.25), (2, 0.5)]
    files = sorted(os.listdir(tmp_path / "tensorboard"))
    assert complete_derived(run, ON) == [] and sorted(os.listdir(tmp_path / "tensorboard")) == files
    assert complete_derived(storage.open_run(str(tmp_path / "empty")), ON) == []
    assert not (tmp_path / "empty").exists()
