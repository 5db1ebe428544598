"""Arrow schemas of the run directory's tables: the contracts between stages.

Every shard carries ``SCHEMA_VERSION`` in its Parquet metadata; readers refuse
shards of another version or with missing/mistyped columns.

>>> from storage.schemas import TABLES
>>> TABLES["steps"].field("anchor_key").type
DataType(uint64)
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
VERSION_KEY = b"gigpo.schema_version"
TABLE_KEY = b"gigpo.table"

_TOKENS = pa.list_(pa.int32())

STEPS = pa.schema(
    [
        pa.field("round", pa.int32(), nullable=False),  # collect round
        pa.field("policy_version", pa.int32(), nullable=False),  # 0: base model; r: round r-1's checkpoint
        pa.field("group_id", pa.int64(), nullable=False),  # episode group, unique in the round
        pa.field("episode_id", pa.int64(), nullable=False),  # trajectory, unique in the round
        pa.field("task_id", pa.string(), nullable=False),  # game file / task identity
        pa.field("step", pa.int32(), nullable=False),  # 0, 1, 2, ... inside the episode
        pa.field("observation", pa.string(), nullable=False),  # raw env text acted on (anchor text)
        pa.field("anchor_key", pa.uint64(), nullable=False),  # stable hash of the anchor state
        pa.field("prompt_ids", _TOKENS, nullable=False),
        pa.field("response_ids", _TOKENS, nullable=False),
        pa.field("response_logprobs", pa.list_(pa.float32()), nullable=False),
        pa.field("action", pa.string(), nullable=False),  # parsed action ("" when invalid)
        pa.field("action_valid", pa.bool_(), nullable=False),  # format validity
        pa.field("reward", pa.float32(), nullable=False),  # env reward after this step
        pa.field("terminated", pa.bool_(), nullable=False),  # env reached a terminal state
        pa.field("truncated", pa.bool_(), nullable=False),  # cut by max_steps or a crash
    ]
)

EPISODES = pa.schema(
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("policy_version", pa.int32(), nullable=False),
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),  # sum of the episode's rewards
        pa.field("won", pa.bool_(), nullable=False),
        pa.field("length", pa.int32(), nullable=False),  # number of steps
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("truncation_reason", pa.string(), nullable=True),  # e.g. "max_steps", "env_crash"
    ]
)

ADVANTAGE_COLUMNS = [
    pa.field("step_return", pa.float64(), nullable=False),  # discounted return incl. current reward
    pa.field("adv_episode", pa.float64(), nullable=False),  # A_E
    pa.field("adv_step", pa.float64(), nullable=False),  # A_S (0 for singleton anchor groups)
    pa.field("anchor_group_size", pa.int32(), nullable=False),  # steps sharing this anchor state
    pa.field("advantage", pa.float64(), nullable=False),  # what the trainer uses
]
ADVANTAGES = pa.schema(list(STEPS) + ADVANTAGE_COLUMNS)

ANCHOR_STATS = pa.schema(
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("steps", pa.int64(), nullable=False),
        pa.field("episodes", pa.int64(), nullable=False),
        pa.field("anchor_groups", pa.int64(), nullable=False),  # distinct anchor states
        pa.field("anchored_share", pa.float64(), nullable=False),  # steps in non-singleton anchor groups
        pa.field("largest_anchor_group", pa.int64(), nullable=False),
        pa.field("mean_abs_adv_episode", pa.float64(), nullable=False),
        pa.field("mean_abs_adv_step", pa.float64(), nullable=False),
        pa.field("success_rate", pa.float64(), nullable=False),  # share of episodes won
    ]
)

EVALUATION = pa.schema(
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("policy_version", pa.int32(), nullable=False),
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("won", pa.bool_(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "steps": STEPS,
    "episodes": EPISODES,
    "advantages": ADVANTAGES,
    "anchor_stats": ANCHOR_STATS,
    "evaluation": EVALUATION,
}

# Which stage of a round commits each table.
TABLE_STAGE: dict[str, str] = {
    "steps": "trajectories",
    "episodes": "trajectories",
    "advantages": "advantages",
    "anchor_stats": "advantages",
    "evaluation": "evaluation",
}
