"""The metrics stage: one round's numbers, gathered from its committed tables, committed as its ``metrics`` stage.

``gather`` reads the round's tables, the stage clock's times
(``pipeline.runtime.clock``), the collect's task times
(``pipeline.rollout.dispatch.rollout_seconds``) and the trainer's per-step metrics into a
``pipeline.records.RoundMetrics``; ``commit_round_metrics`` commits it and
rebuilds ``RUN/metrics.jsonl``.
"""
from __future__ import annotations

import polars as pl

import storage
from pipeline.advantage.purity import pooled_purity
from pipeline.records import (ADVANTAGES_STAGE, EVALUATION_STAGE, TRAJECTORIES_STAGE, RoundMetrics, commit_metrics,
                              read_train_steps)
from pipeline.rollout.dispatch import rollout_seconds
from pipeline.runtime.workers import live_workers

NOTHING_HAPPENS = "Nothing happens."  # ALFWorld's reply to a command it does not admit in the current state


def commit_round_metrics(client, run: storage.Run, round: int, seconds: dict[str, float],
                         config_hash: str) -> RoundMetrics:
    """Gather round ``round``'s metrics (its stage times: ``seconds``) and commit them; the record."""
    cores = sum(w["nthreads"] for w in live_workers(client).values())
    metrics = gather(run, round, seconds, read_train_steps(run, round), cores)
    commit_metrics(run, metrics, config_hash)
    return metrics


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def gather(run: storage.Run, round: int, seconds: dict[str, float], train_steps: list[dict],
           cores: int) -> RoundMetrics:
    """The round's RoundMetrics from its committed tables, stage times and trainer step metrics.

    Tables of stages the round does not have (round -1 has no advantages, maybe no
    trajectories) leave their fields at their defaults.
    """
    steps = {"n": 0, "invalid": None, "nothing": None, "tokens": 0}
    eps = {"won": None, "length": None}
    anchors: dict = {}
    purity: dict = {}
    version = round
    if run.is_committed(round, TRAJECTORIES_STAGE):
        version = run.manifest(round, TRAJECTORIES_STAGE).policy_version
        replied = pl.col("observation").shift(-1).over("episode_id", order_by="step")  # the env's reply to the step
        steps = run.scan("steps", rounds=[round]).select(
            pl.len().alias("n"), (~pl.col("action_valid")).mean().alias("invalid"),
            (replied == NOTHING_HAPPENS).fill_null(False).mean().alias("nothing"),
            pl.col("response_ids").list.len().sum().alias("tokens")).collect().row(0, named=True)
        eps = run.scan("episodes", rounds=[round]).select(
            pl.col("won").mean().alias("won"), pl.col("length").mean().alias("length")).collect().row(0, named=True)
    if run.is_committed(round, ADVANTAGES_STAGE):
        w = pl.col("steps")
        anchors = run.scan("anchor_stats", rounds=[round]).select(
            ((pl.col("anchored_share") * w).sum() / w.sum()).alias("anchored"),
            pl.col("anchor_groups").mean().alias("groups"), pl.col("largest_anchor_group").max().alias("largest"),
            ((pl.col("mean_abs_adv_episode") * w).sum() / w.sum()).alias("ae"),
            ((pl.col("mean_abs_adv_step") * w).sum() / w.sum()).alias("as")).collect().row(0, named=True)
        purity = _purity(run, round)
    held_out = None
    if run.is_committed(round, EVALUATION_STAGE):
        held_out = run.scan("evaluation", rounds=[round]).select(pl.col("won").mean()).collect().item()
    collect_s, adv_s = seconds.get("collect"), seconds.get("advantage")
    rollout = rollout_seconds(run, round)
    return RoundMetrics(
        round=round, policy_version=version,
        success_rate=eps["won"] or 0.0, episode_length=eps["length"] or 0.0,
        format_error_share=steps["invalid"] or 0.0, nothing_happens_share=steps["nothing"] or 0.0,
        response_length=steps["tokens"] / steps["n"] if steps["n"] else None,
        eval_success_rate=held_out, anchored_share=anchors.get("anchored") or 0.0,
        anchor_groups_per_group=anchors.get("groups") or 0.0, largest_anchor_group=anchors.get("largest") or 0,
        mean_abs_adv_episode=anchors.get("ae") or 0.0, mean_abs_adv_step=anchors.get("as") or 0.0,
        loss=_mean(train_steps, "loss"), kl=_mean(train_steps, "approx_kl"),
        clip_fraction=_mean(train_steps, "clip_frac"),
        entropy=_mean(train_steps, "entropy"), grad_norm=_mean(train_steps, "grad_norm"),
        rollout_tokens_per_s=steps["tokens"] / collect_s if collect_s else None,
        env_steps_per_s=steps["n"] / collect_s if collect_s else None,
        generate_seconds=rollout.get("generate"), env_seconds=rollout.get("env"),
        policy_load_seconds=rollout.get("policy_load"),
        advantage_steps_per_s_per_core=steps["n"] / adv_s / cores if adv_s else None,
        train_tokens_per_s=_mean(train_steps, "tokens_per_s"), mfu=_mean(train_steps, "mfu"),
        train_steps=train_steps[-1].get("step", len(train_steps)) if train_steps else 0,
        stage_seconds=dict(seconds), **purity)


def _purity(run: storage.Run, round: int) -> dict[str, float | None]:
    return pooled_purity(run.scan("anchor_groups", rounds=[round]), run.scan("anchor_stats", rounds=[round]))
