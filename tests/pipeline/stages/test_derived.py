"""Derived outputs are completed from the committed metrics stages at a driver's start, once."""
from __future__ import annotations

import json
import os

import storage
from pipeline.records import RoundMetrics, commit_metrics
from pipeline.runtime.loggers import Trackers
from pipeline.runtime.trackers import LoggingConfig
from pipeline.stages.derived import complete_derived

ON = LoggingConfig(tensorboard=True)


def _events(folder) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("success_rate")]


def test_rounds_a_crash_left_underived_are_completed_once(tmp_path, capsys):
    run = storage.open_run(str(tmp_path))
    commit_metrics(run, RoundMetrics(round=0, policy_version=0, train_steps=2), "cfg")
    with Trackers(ON, run) as trackers:
        assert trackers.catch_up() == [0]  # round 0 was logged
    for r in (1, 2):
        commit_metrics(run, RoundMetrics(round=r, policy_version=r, success_rate=0.25 * r, train_steps=2), "cfg")
    (tmp_path / "metrics.jsonl").write_text("")  # killed while the file had lost rounds 1 and 2
    with Trackers(ON, run) as trackers:
        assert complete_derived(run, trackers) == [1, 2]
    assert f"{tmp_path}: logged round(s) [1, 2] to the trackers" in capsys.readouterr().out
    assert [json.loads(line)["round"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert json.loads((tmp_path / "tensorboard/_logged.json").read_text()) == {"rounds": 2}
    assert _events(tmp_path / "tensorboard/rounds") == [(0, 0.0), (1, 0.25), (2, 0.5)]
    files = sorted(os.listdir(tmp_path / "tensorboard/rounds"))
    with Trackers(ON, run) as trackers:
        assert complete_derived(run, trackers) == [] and sorted(os.listdir(tmp_path / "tensorboard/rounds")) == files
    empty = storage.open_run(str(tmp_path / "empty"))
    with Trackers(ON, empty) as trackers:
        assert complete_derived(empty, trackers) == []
    assert not (tmp_path / "empty").exists()
