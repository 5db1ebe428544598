"""Training a committed round of a run directory and committing its checkpoint stage."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl
import pytest
from transformers import AutoModelForCausalLM

import storage
from storage.synthetic import synthetic_round
from trainer.config import TrainerConfig
from pipeline.config import config_hash
from storage.stage_names import CHECKPOINT_STAGE, STATE_STAGE
from trainer.rounds import train_from_run

pytestmark = pytest.mark.usefixtures("dist_group")


def _advantages(round: int) -> pl.DataFrame:
    steps, _ = synthetic_round(round=round, groups=2, group_size=2, min_len=2, max_len=4, prompt_tokens=12,
                               response_tokens=4, seed=round)
    tokens = pl.element() % 500
    return steps.with_columns(
        pl.col("prompt_ids").list.eval(tokens), pl.col("response_ids").list.eval(tokens),
        response_logprobs=pl.col("response_ids").list.eval(pl.element().cast(pl.Float32) * 0 - 1.5),
        step_return=pl.lit(1.0), adv_episode=pl.lit(0.5), adv_step=pl.lit(0.25),
        anchor_group_size=pl.lit(1, dtype=pl.Int32),
        advantage=(pl.col("step") % 3 - 1).cast(pl.Float64), anchor_id=pl.col("step"))


def commit_advantages(run: storage.Run, round: int, rows: pl.DataFrame, policy_version: int = 0) -> None:
    """Commit ``rows`` (steps + advantage columns) as a round's trajectories and slim advantages stages."""
    steps = storage.write_shard(run, round, "steps", rows.select(storage.TABLES["steps"].names), "s")
    run.commit(round, "trajectories", [steps], "rollout", policy_version)
    adv = storage.write_shard(run, round, "advantages", rows.select(storage.TABLES["advantages"].names), "a")
    run.commit(round, "advantages", [adv], "adv", policy_version)


def test_bad_shard_rows_are_named_by_episode_and_step(tiny_model, tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    df = _advantages(0)
    df = df.with_columns(advantage=pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise("advantage"))
    commit_advantages(run, 0, df)
    key = df.row(3, named=True)
    with pytest.raises(ValueError, match=rf"'advantage' of row 3 \(round=0, episode_id={key['episode_id']}, "
                                         rf"step={key['step']}\) is nan"):
        train_from_run(run, 0, TrainerConfig(kl_coef=0.0), tiny_model, progress=False)
    assert not run.is_committed(0, CHECKPOINT_STAGE)


def test_train_from_run_commits_checkpoint_once(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    run = storage.open_run(str(tmp_path / "run"))
    cfg = TrainerConfig(kl_coef=0.0, lr=1e-3, mini_batch_size=4, micro_batch_size=2, save_every=1)
    with pytest.raises(storage.StageNotCommitted, match="no committed 'advantages' stage"):
        train_from_run(run, 0, cfg, tiny_model, progress=False)

    df = _advantages(0)
    commit_advantages(run, 0, df)
    res = train_from_run(run, 0, cfg, tiny_model, progress=False)
    assert res.rows == df.height and res.steps == -(-df.height // 4)

    manifest = run.manifest(0, CHECKPOINT_STAGE)
    assert manifest.config_hash == config_hash(cfg) and manifest.policy_version == 1
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_metrics.jsonl"} <= {
        f.path for f in manifest.files}
    committed_steps = (Path(run.stage_dir(0, CHECKPOINT_STAGE)) / "train_metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in committed_steps] == [m["loss"] for m in res.metrics]
    assert [json.loads(line)["step"] for line in committed_steps] == list(range(1, res.steps + 1))
    AutoModelForCausalLM.from_pretrained(run.stage_dir(0, CHECKPOINT_STAGE))
    assert (Path(run.stage_dir(0, STATE_STAGE)) / "latest").is_file()  # optimizer_state: keep, for round 1
    assert train_from_run(run, 0, cfg, tiny_model, progress=False) is None  # committed: no-op
    assert list((tmp_path / "tmp").iterdir()) == []  # a local run's trainer stages nothing in the temp dir


def test_sft_trains_on_the_rounds_steps(tiny_model, tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    cfg = TrainerConfig(loss="sft", kl_coef=0.0, lr=1e-3, mini_batch_size=4, micro_batch_size=2,
                        optimizer_state="reset")
    with pytest.raises(storage.StageNotCommitted, match="no committed 'trajectories' stage; collect it"):
        train_from_run(run, -1, cfg, tiny_model, progress=False)
    steps = _advantages(1).select(storage.TABLES["steps"].names).with_columns(
        pl.lit(-1, pl.Int32).alias("round"), pl.lit(-1, pl.Int32).alias("policy_version"),
        response_logprobs=pl.col("response_logprobs").list.eval(pl.element() * float("nan")))  # not read by SFT
    run.commit(-1, "trajectories", [storage.write_shard(run, -1, "steps", steps, "s")], "demos", -1)
    res = train_from_run(run, -1, cfg, tiny_model, progress=False)
    assert res.rows == steps.height and all(m["loss"] > 0 for m in res.metrics)
    manifest = run.manifest(-1, CHECKPOINT_STAGE)
    assert manifest.policy_version == 0 and manifest.config_hash == config_hash(cfg)
    assert run.rounds() == [-1]


def test_on_step_gets_each_step_with_the_round_total_and_mean_response_length(tiny_model, tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    df = _advantages(0)  # response lengths 6 5 6 6 | 2 2 6 2 | 6 6 6 3 in mini-batches of 4 (no shuffle)
    commit_advantages(run, 0, df)
    seen = []
    cfg = TrainerConfig(kl_coef=0.0, mini_batch_size=4, micro_batch_size=2, shuffle=False, save_every=0)
    train_from_run(run, 0, cfg, tiny_model, progress=False,
                   on_step=lambda step, total, m: seen.append((step, total, m["response_length"])))
    assert seen == [(1, 3, 5.75), (2, 3, 3.0), (3, 3, 5.25)]
