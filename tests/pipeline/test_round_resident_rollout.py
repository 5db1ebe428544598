"""Two rounds with resident rollout engines and with a fresh engine per checkpoint: the same tables, bit for bit.

One worker, held out after the last round only: round 1's collect meets round 0's
checkpoint in the engine of the base model, which is loaded in place or anew.
"""
from __future__ import annotations

import json

import storage
from tests.pipeline.round_helpers import driver_args, run_to_end, tables

ROUNDS = ["rounds=2", "cluster.n_workers=1", "evaluation.every=0"]
ROUND_0 = ("steps", "episodes", "advantages", "anchor_stats", "anchor_groups")  # round 0 is not held out


def _tables(run: storage.Run) -> dict:
    out = {f"{name} 1": table for name, table in tables(run, [1]).items()}
    out |= {f"{name} 0": run.read(name, [0]) for name in ROUND_0}
    return out | {"evaluation -1": run.read("evaluation", [-1])}


def _run(tmp_path, resident: bool):
    run_dir = tmp_path / f"resident-{resident}"
    code, out = run_to_end(driver_args(run_dir, *ROUNDS, f"rollout.policy.resident={str(resident).lower()}"),
                           timeout=600)
    assert code == 0, out
    collects = [line.split("; policy: ")[1] for line in out.splitlines() if line.startswith("collect: ")]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return storage.open_run(str(run_dir)), collects, records


def test_resident_and_fresh_engines_write_the_same_tables(tmp_path):
    resident, resident_collects, records = _run(tmp_path, True)
    cold, cold_collects, _ = _run(tmp_path, False)
    engines = [line.rsplit(", ", 1)[0] for line in resident_collects + cold_collects]
    assert engines == ["0 fresh engine(s), 0 updated in place", "0 fresh engine(s), 1 updated in place",
                       "1 fresh engine(s), 0 updated in place", "1 fresh engine(s), 0 updated in place"]
    cold_tables = _tables(cold)
    for name, table in _tables(resident).items():
        assert table.height > 0 and table.equals(cold_tables[name]), name
    for m in records[1:]:
        assert m["generate_seconds"] > 0 and m["env_seconds"] > 0 and m["policy_load_seconds"] >= 0
