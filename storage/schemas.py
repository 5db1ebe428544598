"""Arrow schemas of the run directory's tables: the contracts between stages.

Every shard carries ``SCHEMA_VERSION`` in its Parquet metadata; readers refuse
shards of an unknown version or with missing/mistyped columns. Shards of an
older version in ``READABLE_VERSIONS`` stay readable: the columns added since
(``ADDED_IN``) read as nulls.

Version 2 added the steps' ``state_key`` and ``admissible_key``, the
advantages' ``anchor_id``, the purity columns of ``anchor_stats`` and the
``anchor_groups`` table. Version 3 slimmed ``advantages`` shards to the step
keys and the advantage columns: the advantage stage no longer rewrites the
steps' token columns. Shards of versions 1-2 still carry every steps column;
readers skip them. ``VIEWS`` say how a table is read: ``run.scan("advantages")``
joins the stored columns to the round's ``steps`` on the keys, so users and the
trainer see one table (steps columns, then the advantage columns) as before.

>>> from storage.schemas import TABLES
>>> TABLES["steps"].field("anchor_key").type
DataType(uint64)
>>> sorted(absent_in("steps", 1))
['admissible_key', 'state_key']
>>> ADVANTAGES.names[:3], VIEWS["advantages"]
(['round', 'episode_id', 'step'], ('steps', ('round', 'episode_id', 'step')))
"""
from __future__ import annotations

import pyarrow as pa

from storage.stage_names import ADVANTAGES_STAGE, EVALUATION_STAGE, TRAJECTORIES_STAGE

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # shard versions readers accept
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
        pa.field("state_key", pa.uint64(), nullable=True),  # hash of the env's true state acted on (null: none)
        pa.field("admissible_key", pa.uint64(), nullable=True),  # hash of that state's sorted admissible commands
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
    pa.field("anchor_id", pa.int32(), nullable=False),  # the anchor group's number in its group_id (first appearance)
]
ADVANTAGE_KEYS = ("round", "episode_id", "step")  # a step row's key: episode ids are unique in a round
ADVANTAGES = pa.schema([STEPS.field(k) for k in ADVANTAGE_KEYS] + ADVANTAGE_COLUMNS)  # stored shards (v3)

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
        # purity against the true state (state_key); null when the group's steps have none
        pa.field("pure_share", pa.float64(), nullable=True),  # non-singleton anchor groups holding one true state
        pa.field("impure_step_share", pa.float64(), nullable=True),  # steps in anchor groups of several true states
        pa.field("states_per_anchor_group", pa.float64(), nullable=True),  # mean distinct true states per anchor group
        pa.field("revisit_steps", pa.int64(), nullable=True),  # steps whose true state recurs in the group
        pa.field("missed_revisit_share", pa.float64(), nullable=True),  # of those, steps in singleton anchor groups
    ]
)

ANCHOR_GROUPS = pa.schema(
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field("anchor_id", pa.int32(), nullable=False),  # = the advantages' anchor_id
        pa.field("size", pa.int64(), nullable=False),  # steps in the anchor group
        pa.field("anchor_text", pa.string(), nullable=False),  # its first step's observation (fuzzy anchors: a sample)
        pa.field("distinct_returns", pa.int64(), nullable=False),  # distinct step returns (1: A_S carries no signal)
        pa.field("return_mean", pa.float64(), nullable=False),
        pa.field("return_std", pa.float64(), nullable=False),  # unbiased (n-1); 0 for a singleton
        pa.field("mean_abs_adv_step", pa.float64(), nullable=False),
        pa.field("states", pa.int64(), nullable=True),  # distinct true states (null: a step has no state_key)
        pa.field("pure", pa.bool_(), nullable=True),  # states == 1
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
    "anchor_groups": ANCHOR_GROUPS,
    "evaluation": EVALUATION,
}

# Tables read as a join: table -> (the table its stored columns join onto, the join keys).
VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {"advantages": ("steps", ADVANTAGE_KEYS)}

# Which stage of a round commits each table.
TABLE_STAGE: dict[str, str] = {
    "steps": TRAJECTORIES_STAGE,
    "episodes": TRAJECTORIES_STAGE,
    "advantages": ADVANTAGES_STAGE,
    "anchor_stats": ADVANTAGES_STAGE,
    "anchor_groups": ADVANTAGES_STAGE,
    "evaluation": EVALUATION_STAGE,
}

_STEPS_V2 = ("state_key", "admissible_key")
# Columns each version added, by table: a shard of an older version lacks them.
ADDED_IN: dict[int, dict[str, tuple[str, ...]]] = {
    2: {
        "steps": _STEPS_V2,
        "advantages": ("anchor_id",),  # (v1-v2 shards carried the steps' columns, state keys included)
        "anchor_stats": tuple(ANCHOR_STATS.names[ANCHOR_STATS.get_field_index("pure_share"):]),
    },
}


def absent_in(table: str, version: int) -> set[str]:
    """Columns of ``table`` that a shard written with schema ``version`` lacks."""
    return {c for v, added in ADDED_IN.items() if v > version for c in added.get(table, ())}

