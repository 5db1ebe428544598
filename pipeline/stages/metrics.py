"""Gather one round's metrics from its committed tables and the stage clock.

The stage clock (``RUN/rounds/R/_stage_seconds.json``) records the wall time
of each stage the driver ran; a stage found committed on a rerun keeps the
time of the run that did it.
"""
from __future__ import annotations

import contextlib
import json
import time

import polars as pl

import storage
from pipeline.advantage.purity import pooled_purity
from pipeline.stages.record import RoundMetrics
from storage.shards import put_atomic

CLOCK = "_stage_seconds.json"


class StageClock:
    """``with clock("collect", done=run.is_committed(r, "trajectories")):`` times a stage that runs.

    ``StageClock.current`` is the (round, stage) entered last in this process (None before any).
    """

    current: tuple[int, str] | None = None

    def __init__(self, run: storage.Run, round: int):
        self.run, self.round, self.path = run, round, f"{run.root}/rounds/{round:06d}/{CLOCK}"
        try:
            with run.fs.open_input_stream(self.path) as src:
                self.seconds: dict[str, float] = json.loads(src.read())
        except FileNotFoundError:
            self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, stage: str, done: bool):
        StageClock.current = (self.round, stage)
        print(f"round {self.round}: {stage} " + ("(committed)" if done else "..."), flush=True)
        start = time.perf_counter()
        yield
        if not done or stage not in self.seconds:
            self.seconds[stage] = time.perf_counter() - start
            put_atomic(self.run.fs, self.path, json.dumps(self.seconds).encode())


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def gather(run: storage.Run, round: int, seconds: dict[str, float], train_steps: list[dict],
           cores: int) -> RoundMetrics:
    """The round's RoundMetrics from its committed tables, stage times and trainer step metrics.

    Tables of stages the round does not have (round -1 has no advantages, maybe no
    trajectories) leave their fields at their defaults.
    """
    steps = {"n": 0, "invalid": None, "tokens": 0}
    eps = {"won": None, "length": None}
    anchors: dict = {}
    purity: dict = {}
    version = round
    if run.is_committed(round, "trajectories"):
        version = run.manifest(round, "trajectories").policy_version
        steps = run.scan("steps", rounds=[round]).select(
            pl.len().alias("n"), (~pl.col("action_valid")).mean().alias("invalid"),
            pl.col("response_ids").list.len().sum().alias("tokens")).collect().row(0, named=True)
        eps = run.scan("episodes", rounds=[round]).select(
            pl.col("won").mean().alias("won"), pl.col("length").mean().alias("length")).collect().row(0, named=True)
    if run.is_committed(round, "advantages"):
        w = pl.col("steps")
        anchors = run.scan("anchor_stats", rounds=[round]).select(
            ((pl.col("anchored_share") * w).sum() / w.sum()).alias("anchored"),
            pl.col("anchor_groups").mean().alias("groups"), pl.col("largest_anchor_group").max().alias("largest"),
            ((pl.col("mean_abs_adv_episode") * w).sum() / w.sum()).alias("ae"),
            ((pl.col("mean_abs_adv_step") * w).sum() / w.sum()).alias("as")).collect().row(0, named=True)
        purity = _purity(run, round)
    held_out = None
    if run.is_committed(round, "evaluation"):
        held_out = run.scan("evaluation", rounds=[round]).select(pl.col("won").mean()).collect().item()
    collect_s, adv_s = seconds.get("collect"), seconds.get("advantage")
    return RoundMetrics(
        round=round, policy_version=version,
        success_rate=eps["won"] or 0.0, episode_length=eps["length"] or 0.0,
        invalid_action_share=steps["invalid"] or 0.0,
        response_length=steps["tokens"] / steps["n"] if steps["n"] else None,
        eval_success_rate=held_out, anchored_share=anchors.get("anchored") or 0.0,
        anchor_groups_per_group=anchors.get("groups") or 0.0, largest_anchor_group=anchors.get("largest") or 0,
        mean_abs_adv_episode=anchors.get("ae") or 0.0, mean_abs_adv_step=anchors.get("as") or 0.0,
        loss=_mean(train_steps, "loss"), kl=_mean(train_steps, "approx_kl"),
        clip_fraction=_mean(train_steps, "clip_frac"),
        entropy=_mean(train_steps, "entropy"), grad_norm=_mean(train_steps, "grad_norm"),
        rollout_tokens_per_s=steps["tokens"] / collect_s if collect_s else None,
        env_steps_per_s=steps["n"] / collect_s if collect_s else None,
        advantage_steps_per_s_per_core=steps["n"] / adv_s / cores if adv_s else None,
        train_tokens_per_s=_mean(train_steps, "tokens_per_s"), mfu=_mean(train_steps, "mfu"),
        train_steps=len(train_steps),
        stage_seconds=dict(seconds), **purity)


def _purity(run: storage.Run, round: int) -> dict[str, float | None]:
    return pooled_purity(run.scan("anchor_groups", rounds=[round]), run.scan("anchor_stats", rounds=[round]))
