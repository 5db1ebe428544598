"""Shared by the driver's crash and recovery tests: one uninterrupted round (computed once per session)."""
from __future__ import annotations

import json

import pytest

import storage
from tests.pipeline.round_helpers import CRASH, check_round_tables, driver_args, run_to_end, tables


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """One uninterrupted round of the CRASH config: (its tables, its stage seconds, its run directory)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    code, out = run_to_end(driver_args(run_dir, *CRASH), timeout=600)
    assert code == 0, out
    run = storage.open_run(str(run_dir))
    check_round_tables(run, 0)
    seconds = json.loads((run_dir / "metrics.jsonl").read_text())["stage_seconds"]
    return tables(run, [0]), seconds, run_dir
