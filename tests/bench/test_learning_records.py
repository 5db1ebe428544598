"""A learning benchmark resumed on a second machine from its committed records.

Two output folders stand for two machines: the second rebuilds the warm start,
finds it to be the recorded one and runs nothing the records hold; a record of
other weights, or other kernels, stops it with the record's path named.
"""
from __future__ import annotations

import hashlib
import json

import pytest

from bench import learning
from bench import records as rec

# The smoke config shrunk to one 2 x 2 round on 2 games on one Dask worker, with a 2-task warm start.
SETTING = ["--config", "configs/smoke.yaml", "--arms", "gigpo", "--seeds", "0", "--rounds", "1"]
OVERRIDES = ["tasks_per_round=2", "rollout.group_size=2", "rollout.env.max_steps=3", "games.generate_train=2",
             "games.generate_eval=1", "evaluation.tasks=1", "warm_start.tasks=2", "warm_start.epochs=1",
             "cluster.n_workers=1"]


def bench(out, records, *flags):
    return learning.main([*SETTING, "--out", str(out), "--records", str(records), *flags, *OVERRIDES])


def held_out_table(out) -> list[str]:
    return next(b for b in (out / "learning.md").read_text().split("\n\n") if b.startswith("| round")).splitlines()


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The benchmark run once on 'machine A': its output folder and its records."""
    out, records = tmp_path_factory.mktemp("machine_a"), tmp_path_factory.mktemp("repo") / "records"
    assert bench(out, records) == 0
    return out, records


def test_records_hold_the_warm_start_and_each_finished_run(first):
    out, records = first
    weights = out / "warm" / "rounds" / "-00001" / "checkpoint" / rec.WEIGHTS
    warm = json.loads((records / "warm.json").read_text())
    assert warm["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert warm["kernels"] == {} and warm["setting_hash"] == rec.setting_hash("configs/smoke.yaml", OVERRIDES)
    assert sorted(p.name for p in records.iterdir()) == ["gigpo-s0.jsonl", "warm.json"]
    assert (records / "gigpo-s0.jsonl").read_bytes() == (out / "gigpo-s0" / "metrics.jsonl").read_bytes()
    assert (out / "learning.md").read_text().splitlines()[2] == (
        f"Records: records/, warm start {warm['weights_sha256'][:16]} (setting {warm['setting_hash']}, "
        f"kernels native), first made on {rec.cpu_name()}.")


def test_second_machine_runs_only_what_is_not_recorded(first, tmp_path):
    out_a, records = first
    assert bench(tmp_path, records) == 0
    assert (tmp_path / "warm").is_dir() and not (tmp_path / "gigpo-s0").exists()
    assert held_out_table(tmp_path) == held_out_table(out_a)
    assert len(held_out_table(out_a)) == 4  # header, rule, start, round 0

    warm = json.loads((records / "warm.json").read_text())
    (records / "warm.json").write_text(json.dumps(warm | {"weights_sha256": "0" * 64}))
    try:
        with pytest.raises(SystemExit, match=rf"^{records / 'warm.json'}: recorded warm-start weights 0{{16}} "
                                             r".* would not pair with the recorded ones"):
            bench(tmp_path, records)
    finally:
        (records / "warm.json").write_text(json.dumps(warm))


def test_other_kernels_stop_before_any_work(first, tmp_path):
    _, records = first
    with pytest.raises(SystemExit, match=rf"^{records / 'warm.json'}: recorded kernels \{{\}}, this invocation uses"):
        bench(tmp_path, records, "--pin-avx2")
    assert list(tmp_path.iterdir()) == []
