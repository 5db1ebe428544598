"""GiGPO advantage engine: retroactive anchor join and group-wise normalisation.

Conventions (verl-agent's ``gigpo/core_gigpo.py``; each is a field of AdvantageConfig):

- step return G_t = r_t + gamma * G_{t+1}, current reward included, no bootstrap;
- invalid action: ``invalid_penalty`` comes off that step's return after
  discounting and off that row's episode score, never off earlier steps;
- episode score = sum of the episode's rewards; A_E over the group's step rows
  (``episode_stats="steps"``) or one entry per episode (``"episodes"``: its
  step-0 row's score; verl-agent takes the first row it meets, step 0 in
  rollout order); each row is then normalised with its own (penalised) score;
- ``norm="std"``: (x - mean) / (unbiased std + epsilon); ``"mean"``: x - mean;
  a group with one entry has mean 0 and std 1;
- anchor groups live inside one group_id; a singleton anchor group has A_S = 0;
- advantage = A_E + step_weight * A_S (``gigpo``), A_E (``grpo``) or A_S (``step_only``); RLOO's
  leave-one-out episode baseline (``rloo``); or, for ``ppo``, the step's penalised reward that the
  trainer's GAE turns into an advantage with its critic (``estimators.py``).

Entry points: ``compute_advantages`` (a frame), ``run_advantage_job`` (Parquet
shards, in process or on Dask; the advantage stage, ``pipeline.stages.advantage``,
runs it on a run directory's round and commits it), ``anchor_stats`` (per-group
table), ``anchor_groups`` (per-anchor-group table, purity against the true
state), ``anchor_key`` (the stable key rollout workers store).

>>> import polars as pl
>>> from pipeline.advantage import AdvantageConfig, compute_advantages
>>> steps = pl.DataFrame({"group_id": [0, 0], "episode_id": [0, 1], "step": [0, 0],
...                       "reward": [1.0, 0.0], "anchor_key": [7, 7]})
>>> compute_advantages(steps, AdvantageConfig())["advantage"].round(4).to_list()
[1.4142, -1.4142]
"""
from pipeline.advantage import clustering  # noqa: F401  (registers "similarity" and "embedding")
from pipeline.advantage.anchors import ANCHORS, NORMALIZERS, anchor_key, register_anchor, register_normalizer, text_key
from pipeline.advantage.config import AdvantageConfig
from pipeline.advantage.dask_job import JobResult, run_advantage_job
from pipeline.advantage.engine import ADVANTAGE_COLUMNS, compute_advantages
from pipeline.advantage.estimators import ESTIMATOR_SPECS, ESTIMATORS, EstimatorRows, register_estimator
from pipeline.advantage.purity import anchor_groups
from pipeline.advantage.stats import anchor_stats
from pipeline.advantage.validate import AdvantageInputError

__all__ = [
    "ADVANTAGE_COLUMNS",
    "ANCHORS",
    "ESTIMATORS",
    "ESTIMATOR_SPECS",
    "EstimatorRows",
    "NORMALIZERS",
    "AdvantageConfig",
    "AdvantageInputError",
    "JobResult",
    "anchor_groups",
    "anchor_key",
    "anchor_stats",
    "compute_advantages",
    "register_anchor",
    "register_estimator",
    "register_normalizer",
    "run_advantage_job",
    "text_key",
]
