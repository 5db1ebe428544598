"""The records a round commits beside its tables, read back by the driver, the loggers and the report.

The stage names (``storage.stage_names``) are the folders ``RUN/rounds/<round>/<stage>/``;
the stages write there and readers read there, through this module.

- ``RoundMetrics``: one round in numbers, the ``metrics`` stage's ``metrics.json``
  and one line of ``RUN/metrics.jsonl``. Round -1 (the warm start and the
  held-out baseline before round 0) has a record too, the file's first line.
  ``metrics.jsonl`` is rebuilt from the committed records, so a resumed round
  never writes a line twice.
- ``read_train_steps``: the trainer's per-step metrics, committed with the
  round's ``checkpoint``; ``step_axis`` numbers every optimizer step of the run,
  ``axis_start`` numbers the warm start's SFT steps and the RL steps apart.

>>> m = RoundMetrics(round=0, policy_version=0)
>>> RoundMetrics.from_json(m.to_json()) == m
True
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import storage
from storage.shards import put_atomic
from storage.stage_names import (ADVANTAGES_STAGE, CHECKPOINT_STAGE, EVALUATION_STAGE, FORK_FILE, METRICS_FILE,
                                 METRICS_STAGE, STATE_STAGE, TRAIN_STEPS, TRAJECTORIES_STAGE)

__all__ = ["ADVANTAGES_STAGE", "CHECKPOINT_STAGE", "EVALUATION_STAGE", "FORK_FILE", "METRICS_FILE", "METRICS_STAGE",
           "STATE_STAGE", "TRAIN_STEPS", "TRAJECTORIES_STAGE", "RoundMetrics", "axis_start", "commit_metrics",
           "read_metrics", "read_train_steps", "step_axis", "step_numbers", "write_jsonl"]


@dataclass(frozen=True)
class RoundMetrics:
    """What one round did, in numbers a person can read."""

    round: int  # the round
    policy_version: int  # policy version that collected the round's data (= round; -1: the warm start's expert)
    success_rate: float = 0.0  # share of collected episodes won
    episode_length: float = 0.0  # mean steps per collected episode
    format_error_share: float = 0.0  # share of steps whose response had no readable <action> (a format error)
    nothing_happens_share: float = 0.0  # share of steps the env answered "Nothing happens." (a command it refused)
    response_length: float | None = None  # mean response tokens per collected step
    eval_success_rate: float | None = None  # share of held-out episodes won (None: not evaluated)
    anchored_share: float = 0.0  # share of steps in non-singleton anchor groups (GiGPO's step signal)
    anchor_groups_per_group: float = 0.0  # mean distinct anchor states per episode group
    largest_anchor_group: int = 0  # largest anchor group of the round
    mean_abs_adv_episode: float = 0.0  # mean |A_E| over steps
    mean_abs_adv_step: float = 0.0  # mean |A_S| over steps
    # anchor purity against the env's true state (None when the steps carry no state_key)
    anchor_pure_share: float | None = None  # non-singleton anchor groups holding one true state
    impure_step_share: float | None = None  # steps in anchor groups of several true states
    states_per_anchor_group: float | None = None  # mean distinct true states per anchor group
    missed_revisit_share: float | None = None  # steps whose true state recurs in the group, left in singletons
    loss: float | None = None  # mean policy loss over the round's optimizer steps
    kl: float | None = None  # mean approx_kl: the sampling policy's log-probs minus the updated policy's
    clip_fraction: float | None = None  # mean share of clipped tokens
    entropy: float | None = None  # mean token entropy
    grad_norm: float | None = None  # mean gradient norm before clipping
    rollout_tokens_per_s: float | None = None  # generated tokens per second (collect)
    env_steps_per_s: float | None = None  # env steps per second (collect)
    generate_seconds: float | None = None  # seconds inside the policy's generate, summed over the collect's tasks
    env_seconds: float | None = None  # seconds inside env calls, summed over the collect's tasks
    policy_load_seconds: float | None = None  # seconds getting the policy ready, summed over the collect's tasks
    advantage_steps_per_s_per_core: float | None = None  # advantage job throughput per core
    train_tokens_per_s: float | None = None  # trained tokens per second
    mfu: float | None = None  # model FLOPs utilisation of training (GPU only)
    train_steps: int | None = None  # optimizer steps of the round's training (None: recorded before this field)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RoundMetrics":
        raw = json.loads(text)
        raw.setdefault("format_error_share", raw.get("invalid_action_share", 0.0))  # its name in older records
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


def commit_metrics(run: storage.Run, metrics: RoundMetrics, config_hash: str) -> None:
    """Commit the round's metrics stage, then rebuild ``RUN/metrics.jsonl``."""
    r = metrics.round
    if not run.is_committed(r, METRICS_STAGE):
        run.begin(r, METRICS_STAGE)
        put_atomic(run.fs, f"{run.stage_dir(r, METRICS_STAGE)}/{METRICS_FILE}", metrics.to_json().encode())
        run.commit(r, METRICS_STAGE, [run.describe(r, METRICS_STAGE, METRICS_FILE)], config_hash,
                   metrics.policy_version)
    write_jsonl(run)


def read_metrics(run: storage.Run) -> list[RoundMetrics]:
    """Committed metrics records, by round."""
    out = []
    for r in run.rounds():
        if run.is_committed(r, METRICS_STAGE):
            out.append(RoundMetrics.from_json(run.read_bytes(r, METRICS_STAGE, METRICS_FILE).decode()))
    return out


def step_axis(run: storage.Run, records: list[RoundMetrics]) -> dict[int, tuple[int, int]]:
    """``round -> (global step before its training, its optimizer steps)``: one step axis across rounds.

    Every optimizer step of the run, the warm start's SFT steps included, has one
    global step; ``records`` are all committed rounds, in order.

    >>> import tempfile
    >>> run = storage.open_run(tempfile.mkdtemp())
    >>> step_axis(run, [RoundMetrics(-1, -1, train_steps=4), RoundMetrics(0, 0, train_steps=3),
    ...                 RoundMetrics(1, 1, train_steps=3)])
    {-1: (0, 4), 0: (4, 3), 1: (7, 3)}
    """
    axis, total = {}, 0
    for m in sorted(records, key=lambda m: m.round):
        steps = m.train_steps if m.train_steps is not None else len(read_train_steps(run, m.round))
        axis[m.round], total = (total, steps), total + steps
    return axis


def axis_start(axis: dict[int, tuple[int, int]], round: int) -> int:
    """The step before round ``round``'s first on its own axis (``axis``: a ``step_axis``): the warm start's SFT
    steps (round -1) count from 0, the RL steps of round r >= 0 after those of rounds 0 to r-1.

    >>> axis = {-1: (0, 4), 0: (4, 3), 1: (7, 3)}
    >>> axis_start(axis, -1), axis_start(axis, 0), axis_start(axis, 1)
    (0, 0, 3)
    """
    return 0 if round < 0 else sum(steps for r, (_, steps) in axis.items() if 0 <= r < round)


def step_numbers(rows: list[dict], steps: int) -> list[int]:
    """Each committed step record's optimizer step in its round of ``steps`` (1-based): its ``step``; records
    written without one are the round's last ones (a resumed training records the steps it took).

    >>> step_numbers([{"step": 3}, {"step": 4}], 4), step_numbers([{}, {}], 4)
    ([3, 4], [3, 4])
    """
    return [row.get("step", steps - len(rows) + i + 1) for i, row in enumerate(rows)]


def read_train_steps(run: storage.Run, round: int) -> list[dict]:
    """The per-step trainer metrics committed with round ``round``'s checkpoint ([] if none), checked against its
    manifest."""
    manifest = run.manifest(round, CHECKPOINT_STAGE)
    if manifest is None or TRAIN_STEPS not in {f.path for f in manifest.files}:
        return []
    return [json.loads(line) for line in run.read_bytes(round, CHECKPOINT_STAGE, TRAIN_STEPS).decode().splitlines()]


def write_jsonl(run: storage.Run) -> None:
    """Rewrite ``RUN/metrics.jsonl`` from the committed metrics stages (atomically)."""
    lines = "".join(m.to_json() + "\n" for m in read_metrics(run)).encode()
    path = f"{run.root}/metrics.jsonl"
    try:
        with run.fs.open_input_stream(path) as src:
            if src.read() == lines:
                return  # already complete: a read-only run stays untouched
    except FileNotFoundError:
        pass
    put_atomic(run.fs, path, lines)
