"""Round -1 of a run: the policy round 0 starts from, and its held-out baseline.

``warm_start`` (with a ``warm_start`` config section) has ALFWorld's expert play
train games through the rollout loop (round -1's ``trajectories``: steps with
``policy_version`` -1 whose responses are the expert's actions in the agent's
format), then fine-tunes ``base_model`` on those steps (loss ``sft``; round -1's
``checkpoint``, policy version 0). Round 0 collects with that checkpoint and it
is the KL reference. ``evaluate_before`` plays the held-out tasks with the
starting policy (round -1's ``evaluation``, verl-agent's ``val_before_train``)
and commits round -1's metrics, the first line of ``metrics.jsonl``. Every stage
is committed by a manifest and skipped when committed, as a round's stages are.

>>> demo_rollout(RolloutConfig(), WarmStartConfig(epsilon=0.1)).policy.backend
'expert'
>>> sft_trainer(TrainerConfig(), WarmStartConfig(lr=1e-3)).loss
'sft'
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import storage
from pipeline.config import config_hash
from pipeline.records import CHECKPOINT_STAGE, EVALUATION_STAGE, METRICS_STAGE, TRAJECTORIES_STAGE
from pipeline.rollout.config import RolloutConfig
from pipeline.run_config import RunConfig, WarmStartConfig
from pipeline.runtime.clock import StageClock
from pipeline.runtime.live import fig
from pipeline.stages.collect import collect
from pipeline.stages.evaluate import evaluate
from pipeline.stages.fork import fork_start
from pipeline.stages.metrics import commit_round_metrics
from pipeline.stages.setup import round_tasks
from pipeline.stages.train import train
from trainer.config import TrainerConfig

WARM_ROUND = -1  # the round number of everything before round 0


def demo_rollout(rollout: RolloutConfig, ws: WarmStartConfig) -> RolloutConfig:
    """The collect settings with the expert backend (and its epsilon) and the env expert attached."""
    policy = dataclasses.replace(rollout.policy, backend="expert", expert_epsilon=ws.epsilon)
    env = dataclasses.replace(rollout.env, expert=ws.expert)
    return dataclasses.replace(rollout, group_size=ws.group_size, policy=policy, env=env)


def sft_trainer(trainer: TrainerConfig, ws: WarmStartConfig) -> TrainerConfig:
    """The trainer settings of the SFT stage: the run's, with the warm start's loss, schedule and batches.

    Its AdamW state is not carried into round 0 (another loss, another learning rate).
    """
    return dataclasses.replace(trainer, loss="sft", kl_coef=0.0, lr=ws.lr, lr_decay=ws.lr_decay,
                               ppo_epochs=ws.epochs, mini_batch_size=ws.mini_batch_size,
                               micro_batch_size=ws.micro_batch_size, optimizer_state="reset", keep_state=False)


def derived_sections(cfg: RunConfig) -> dict:
    """The settings round -1's stages run with besides the config's sections, by the name they are saved under."""
    ws = cfg.warm_start
    if ws is None or not ws.enabled or cfg.fork is not None:
        return {}
    return {"warm_start.rollout": demo_rollout(cfg.rollout, ws), "warm_start.trainer": sft_trainer(cfg.trainer, ws)}


def warm_start(client, run: storage.Run, cfg: RunConfig, games: list[str], base: str,
               on_step: Callable[[dict], None] | None = None) -> str:
    """The policy round 0 starts from: round -1's SFT checkpoint (or the fork's copy), else ``base``.

    ``on_step`` gets each SFT step record as the step ends (``pipeline.stages.train``).

    Once round 0 is collected its starting policy stays what it was, whatever the
    ``warm_start`` section says now: a committed warm start is kept, none is made.
    """
    ws = cfg.warm_start
    if run.is_committed(WARM_ROUND, CHECKPOINT_STAGE):
        return run.stage_dir(WARM_ROUND, CHECKPOINT_STAGE)
    if cfg.fork is None and (ws is None or not ws.enabled):
        return base
    if run.is_committed(0, TRAJECTORIES_STAGE):
        print("warning: round 0 was collected from the base model; no warm start or fork is made now",
              file=sys.stderr, flush=True)
        return base
    if cfg.fork is not None:
        return fork_start(run, cfg.fork)
    clock = StageClock(run, WARM_ROUND)
    with clock("demos", done=run.is_committed(WARM_ROUND, TRAJECTORIES_STAGE)):
        tasks = round_tasks(games, WARM_ROUND, ws.tasks, cfg.games.seed)
        collect(client, run, WARM_ROUND, base, tasks, demo_rollout(cfg.rollout, ws), policy_version=WARM_ROUND)
    with clock("warm_start", done=run.is_committed(WARM_ROUND, CHECKPOINT_STAGE)):
        train(client, run, WARM_ROUND, base, None, sft_trainer(cfg.trainer, ws), cfg.cluster, on_step)
    return run.stage_dir(WARM_ROUND, CHECKPOINT_STAGE)


def evaluate_before(client, run: storage.Run, cfg: RunConfig, held_out: list[str], start: str) -> None:
    """Evaluate ``start`` on the held-out tasks (``evaluation.before_training``), commit round -1's metrics."""
    if run.is_committed(WARM_ROUND, METRICS_STAGE):
        return
    clock = StageClock(run, WARM_ROUND)
    if cfg.evaluation.before_training:
        with clock("evaluate", done=run.is_committed(WARM_ROUND, EVALUATION_STAGE)):
            evaluate(client, run, WARM_ROUND, start, held_out, cfg.rollout, cfg.evaluation)
    if not run.stages(WARM_ROUND):
        return  # no warm start, nothing evaluated: round 0 is the first record
    metrics = commit_round_metrics(client, run, WARM_ROUND, clock.seconds, config_hash(cfg))
    print(f"before round 0: held-out {fig(metrics.eval_success_rate)}"
          + (f", expert success {metrics.success_rate:.3f}, SFT loss {fig(metrics.loss)}"
             if run.is_committed(WARM_ROUND, TRAJECTORIES_STAGE) else ""), flush=True)
