"""``overlap: 1``: round r+1 is collected with round r-1's checkpoint while round r trains; the rows record the
policy version that sampled them, and a run continued later gives the tables of a run made in one go.

    .venv/bin/python -m pytest tests/pipeline/test_round_overlap.py -q
"""
from __future__ import annotations

import storage
from tests.pipeline.round_helpers import KEY, driver_args, run_to_end

# Two workers: the next round collects on one while the round trains on the other.
OVERLAP = ["overlap=1", "trainer.old_logprobs=rollout", "evaluation.every=0", "cluster.n_workers=2"]


def test_overlapped_rounds_record_the_sampling_policy_and_resume_to_the_same_tables(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    code, out = run_to_end(driver_args(whole, *OVERLAP, "rounds=3"), timeout=600)
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.startswith("round ")]
    # round 1's collect starts while round 0 trains, before round 0 is committed
    committed = next(i for i, line in enumerate(lines) if line.startswith("round 0: success"))
    assert lines.index("round 1: collect ...") < committed
    assert "round 1: collect (committed)" in lines
    run = storage.open_run(str(whole))
    versions = {r: run.manifest(r, "trajectories").policy_version for r in (0, 1, 2)}
    assert versions == {0: 0, 1: 0, 2: 1}
    for r in (0, 1, 2):
        assert run.read("steps", [r])["policy_version"].unique().to_list() == [versions[r]]
    # round r trains from round r-1's checkpoint (version r) whatever played its rows: it makes version r+1
    assert {r: run.manifest(r, "checkpoint").policy_version for r in (0, 1, 2)} == {0: 1, 1: 2, 2: 3}

    for rounds in (2, 3):  # the same run made in two invocations: round 2 is collected by the second
        code, out = run_to_end(driver_args(split, *OVERLAP, f"rounds={rounds}"), timeout=600)
        assert code == 0, out
    other = storage.open_run(str(split))
    for name, order in (("steps", KEY), ("episodes", ["episode_id"]), ("advantages", KEY)):
        expected, got = (r.read(name, [0, 1, 2]).sort("round", *order) for r in (run, other))
        assert got.equals(expected), name
