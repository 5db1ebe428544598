"""Fork: a new run starts from round K of another run, its AdamW state continued, its KL reference chosen apart."""
from __future__ import annotations

import json
import os

import polars as pl
import pytest
from safetensors.torch import load_file

import storage
from pipeline.config import ConfigError, load
from pipeline.models.tiny_model import make_tiny_model
from pipeline.run_config import ForkConfig, RunConfig
from pipeline.stages.fork import fork_start
from pipeline.stages.setup import check_paths
from storage.synthetic import synthetic_round
from tests.trainer.test_rounds import commit_advantages
from trainer.config import TrainerConfig
from trainer.rounds import train_from_run

CFG = TrainerConfig(kl_coef=0.0, lr=1e-3, mini_batch_size=4, micro_batch_size=2, save_every=0, shuffle=False)


def _commit_advantages(run, r: int) -> None:
    steps, _ = synthetic_round(round=0, groups=2, group_size=2, min_len=2, max_len=4, prompt_tokens=12,
                               response_tokens=4, seed=0)  # the same rows in every round
    tokens = pl.element() % 500
    df = steps.with_columns(
        pl.col("prompt_ids").list.eval(tokens), pl.col("response_ids").list.eval(tokens),
        response_logprobs=pl.col("response_ids").list.eval(pl.element().cast(pl.Float32) * 0 - 1.5),
        step_return=pl.lit(1.0), adv_episode=pl.lit(0.5), adv_step=pl.lit(0.25),
        anchor_group_size=pl.lit(1, dtype=pl.Int32), advantage=(pl.col("step") % 3 - 1).cast(pl.Float64),
        anchor_id=pl.col("step"), round=pl.lit(r, dtype=pl.Int32))
    commit_advantages(run, r, df, policy_version=r)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A run whose round 0 trained from the tiny model and kept its AdamW state."""
    from trainer.deepspeed_engine import init_distributed

    init_distributed()
    root = tmp_path_factory.mktemp("fork")
    run = storage.open_run(str(root / "source"))
    _commit_advantages(run, 0)
    train_from_run(run, 0, CFG, make_tiny_model(root / "tiny", seed=0), progress=False)
    return run


def test_fork_copies_the_checkpoint_and_state_and_round_0_continues_adamw(source, tmp_path):
    run = storage.open_run(str(tmp_path / "fork"))
    start = fork_start(run, ForkConfig(run=source.root, round=0))
    assert start == run.stage_dir(-1, "checkpoint") and run.manifest(-1, "checkpoint").policy_version == 0
    src_files = {f.path for f in source.manifest(0, "checkpoint").files}
    assert {f.path for f in run.manifest(-1, "checkpoint").files} == (src_files - {"train_metrics.jsonl"}
                                                                       | {"_fork.json"})
    assert json.loads(open(f"{start}/_fork.json").read()) == {"run": source.root, "round": 0, "optimizer_state": True}
    assert os.stat(f"{start}/model.safetensors").st_ino == os.stat(
        f"{source.stage_dir(0, 'checkpoint')}/model.safetensors").st_ino  # linked, not copied
    assert fork_start(run, ForkConfig(run=source.root, round=0)) == start  # committed: a no-op

    _commit_advantages(run, 0)
    forked = train_from_run(run, 0, CFG, start, progress=False)
    _commit_advantages(source, 1)  # the source's own next round, on the same rows
    direct = train_from_run(source, 1, CFG, source.stage_dir(0, "checkpoint"), progress=False)
    assert forked.continued and direct.continued
    a = load_file(f"{run.stage_dir(0, 'checkpoint')}/model.safetensors")
    b = load_file(f"{source.stage_dir(1, 'checkpoint')}/model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("overrides, message", [
    (["fork.round=5"], "fork.round: the checkpoint of round 5 of {src} is not committed (kept: {kept})"),
    (["fork.run=/nonexistent"], "fork.run: /nonexistent: no run directory (no rounds/ folder)"),
    (["run_dir={src}"], "fork.run: {src} is this run's own directory (run_dir); fork into a new one"),
    (["warm_start.tasks=4"], "fork: a forked run starts from the source's checkpoint, so it has no warm start; "
                             "remove the warm_start section or set warm_start.enabled=false"),
    (["trainer.reference=none"], "trainer.reference='none': 'none' (no KL reference) needs kl_coef=0, "
                                 "got kl_coef=0.01"),
])
def test_bad_fork_or_reference_is_named_before_any_work(source, tmp_path, overrides, message):
    args = [f"run_dir={tmp_path}/new", f"fork.run={source.root}"] + [o.format(src=source.root) for o in overrides]
    with pytest.raises(ConfigError) as err:
        check_paths(load(RunConfig, None, args))
    kept = [r for r in source.rounds() if source.is_committed(r, "checkpoint")]  # [0], and 1 after the test above
    assert str(err.value) == message.format(src=source.root, kept=kept)
