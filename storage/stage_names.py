"""The stages of a round, by the name of their folder ``RUN/rounds/<round>/<stage>/``, and their record files.

The pipeline's stages commit them (``pipeline.records`` reads them back), the
trainer commits the checkpoint, and storage knows which stage owns each table
(``storage.schemas.TABLE_STAGE``) and which files a stage folder may hold
(``storage.stage_files``).
"""
from __future__ import annotations

TRAJECTORIES_STAGE = "trajectories"  # collect: the steps and episodes tables
ADVANTAGES_STAGE = "advantages"  # advantage: the advantages, anchor_stats and anchor_groups tables
CHECKPOINT_STAGE = "checkpoint"  # train: a Hugging Face export and TRAIN_STEPS
EVALUATION_STAGE = "evaluation"  # evaluate: the evaluation table
METRICS_STAGE = "metrics"  # the round's numbers: METRICS_FILE
STATE_STAGE = "trainer_state"  # the trainer's DeepSpeed state for resume (never committed)

TRAIN_STEPS = "train_metrics.jsonl"  # per-step trainer metrics, committed with the checkpoint
METRICS_FILE = "metrics.json"  # the metrics stage's one file: a RoundMetrics record
FORK_FILE = "_fork.json"  # a forked run's checkpoint: which run and round it was copied from
