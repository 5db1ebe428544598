"""The multi-turn rollout loop: whole episode groups played in lock-step, one shard pair per batch.

Each turn: build a prompt for every episode still running, generate for those
only (``PolicyBackend.act``; the expert backend reads each episode's expert
plan instead), parse ``<action>``, step their envs in parallel processes,
record one step row each. Finished episodes leave the generation batch. Memory is
bounded by the batch (``groups_per_batch x group_size`` episodes), never by
the round.

Ids: group ``g`` of the round (its task's index in the round's task list) has
``group_id = g`` and episodes ``episode_id = g * group_size + member``, so a
retried batch writes identical ids.

Each row also carries what the env reported about the state acted on:
``state_key`` (the engine's true state, ``AlfworldEnv``) and ``admissible_key``
(``commands_key`` of its admissible commands), for anchor purity and the
``state``/``composite`` anchors. Hashing the commands here costs one BLAKE2b
per step; storing them would add ~30 strings per step to every row.

Failures stay inside their episode, the batch is still written:

- an env that raises (or whose worker process dies) ends that episode
  truncated with reason ``env_error`` / ``env_crash``; a game that cannot be
  reset gives its group ``group_size`` episodes of length 0, reason ``env_error``;
- a prompt longer than ``max_model_len - max_new_tokens`` is not truncated
  (cutting the chat template or the task would feed the model a malformed
  prompt): the episode ends before that step, truncated with reason
  ``prompt_too_long``, and a message names the task, episode, step and lengths.

One line per such failure comes back in ``BatchStats.errors``.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import polars as pl

from pipeline.advantage.anchors import anchor_key, commands_key
from pipeline.envs.pool import EnvPool
from pipeline.envs.prompts import build_prompt, chat_prompt, parse_action
from pipeline.policy.base import PolicyBackend, Turn
from pipeline.rollout.config import RolloutConfig

log = logging.getLogger(__name__)

STEP_COLUMNS = ("group_id", "episode_id", "task_id", "step", "observation", "state_key", "admissible_key",
                "prompt_ids", "response_ids", "response_logprobs", "action", "action_valid", "reward", "terminated",
                "truncated")


@dataclass(frozen=True)
class Group:
    """One task of the round, played ``group_size`` times from the same start."""

    group_id: int  # index of the task in the round's task list
    task_id: str  # task identity written to the tables
    game_file: str  # what the env resets to


@dataclass
class BatchStats:
    """What one batch did (summed by ``collect`` for its progress bar and figures)."""

    episodes: int = 0  # episodes played (= groups x group_size)
    steps: int = 0  # step rows written
    generated_tokens: int = 0  # response tokens sampled
    generate_s: float = 0.0  # seconds inside policy.generate
    env_s: float = 0.0  # seconds inside env pool calls (reset + step)
    policy_load_s: float = 0.0  # seconds getting the policy ready (a fresh engine or an in-place update)
    engine: str = ""  # how the task got its policy: "kept", "updated" (in place) or "loaded" (a fresh engine)
    errors: list[str] = field(default_factory=list)  # env failures and refused prompts, one line each


def mix_seed(*parts: int) -> int:
    """A 31-bit seed from integers (stable across processes and Python versions).

    >>> mix_seed(0, 3, 1) == mix_seed(0, 3, 1) != mix_seed(0, 3, 2)
    True
    """
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class _Episodes:
    """Per-episode state of a batch, indexed by env slot; step rows as column lists."""

    def __init__(self, groups: list[Group], group_size: int):
        self.gid = [g.group_id for g in groups for _ in range(group_size)]
        self.eid = [g.group_id * group_size + m for g in groups for m in range(group_size)]
        self.task_id = [g.task_id for g in groups for _ in range(group_size)]
        n = len(self.eid)
        self.obs, self.task, self.admissible = [""] * n, [""] * n, [[] for _ in range(n)]
        self.state: list[int | None] = [None] * n  # state_key of the state each episode is in
        self.plan: list[list[str] | None] = [None] * n  # the env expert's next commands (with an expert)
        self.history: list[list[tuple[str, str]]] = [[] for _ in range(n)]
        self.score, self.length, self.last_row = [0.0] * n, [0] * n, [-1] * n
        self.end: list[tuple | None] = [None] * n  # (won, terminated, truncated, reason)
        self.rows: dict[str, list] = {c: [] for c in STEP_COLUMNS}

    def add_row(self, k: int, prompt: list[int], gen, action: str, valid: bool, res) -> None:
        values = (self.gid[k], self.eid[k], self.task_id[k], self.length[k], self.obs[k], self.state[k],
                  commands_key(self.admissible[k]), prompt, gen.token_ids, gen.logprobs, action, valid, res.reward,
                  res.terminated, res.truncated)
        for col, v in zip(STEP_COLUMNS, values):
            self.rows[col].append(v)
        self.last_row[k] = len(self.rows["step"]) - 1
        self.history[k].append((self.obs[k], action))
        self.obs[k], self.admissible[k] = res.observation, list(res.admissible_commands)
        self.state[k], self.plan[k] = res.state_key, res.expert_plan
        self.score[k] += res.reward
        self.length[k] += 1
        if res.done:
            self.end[k] = (res.won, res.terminated, res.truncated, res.truncation_reason)

    def cut(self, k: int, reason: str) -> None:
        """End a running episode as truncated without another step (its last row says so)."""
        self.end[k] = (False, False, True, reason)
        if self.last_row[k] >= 0:
            self.rows["truncated"][self.last_row[k]] = True

    def steps_frame(self, round: int, policy_version: int) -> pl.DataFrame:
        """Step rows of the ``steps`` schema, sorted by episode and step."""
        r = self.rows
        steps = pl.DataFrame({
            "group_id": pl.Series(r["group_id"], dtype=pl.Int64),
            "episode_id": pl.Series(r["episode_id"], dtype=pl.Int64),
            "task_id": pl.Series(r["task_id"], dtype=pl.String),
            "step": pl.Series(r["step"], dtype=pl.Int32),
            "observation": pl.Series(r["observation"], dtype=pl.String),
            "state_key": pl.Series(r["state_key"], dtype=pl.UInt64),
            "admissible_key": pl.Series(r["admissible_key"], dtype=pl.UInt64),
            "prompt_ids": pl.Series(r["prompt_ids"], dtype=pl.List(pl.Int32)),
            "response_ids": pl.Series(r["response_ids"], dtype=pl.List(pl.Int32)),
            "response_logprobs": pl.Series(r["response_logprobs"], dtype=pl.List(pl.Float32)),
            "action": pl.Series(r["action"], dtype=pl.String),
            "action_valid": pl.Series(r["action_valid"], dtype=pl.Boolean),
            "reward": pl.Series(r["reward"], dtype=pl.Float32),
            "terminated": pl.Series(r["terminated"], dtype=pl.Boolean),
            "truncated": pl.Series(r["truncated"], dtype=pl.Boolean),
        })
        return steps.with_columns(*_constants(round, policy_version),
                                  anchor_key(steps["observation"])).sort("episode_id", "step")

    def episodes_frame(self, round: int, policy_version: int) -> pl.DataFrame:
        """One row per episode of the ``episodes`` schema (every episode must have ended)."""
        won, term, trunc, reason = (list(c) for c in zip(*self.end)) if self.end else ([], [], [], [])
        return pl.DataFrame({
            "group_id": pl.Series(self.gid, dtype=pl.Int64), "episode_id": pl.Series(self.eid, dtype=pl.Int64),
            "task_id": pl.Series(self.task_id, dtype=pl.String), "score": pl.Series(self.score, dtype=pl.Float32),
            "won": pl.Series(won, dtype=pl.Boolean), "length": pl.Series(self.length, dtype=pl.Int32),
            "terminated": pl.Series(term, dtype=pl.Boolean), "truncated": pl.Series(trunc, dtype=pl.Boolean),
            "truncation_reason": pl.Series(reason, dtype=pl.String),
        }).with_columns(*_constants(round, policy_version))


def _constants(round: int, policy_version: int) -> list[pl.Expr]:
    return [pl.lit(round, pl.Int32).alias("round"), pl.lit(policy_version, pl.Int32).alias("policy_version")]


def _reset(pool: EnvPool, groups: list[Group], group_size: int, stats: BatchStats) -> tuple[list[Group], list]:
    """Reset every group's envs; groups whose game fails are found one by one and left out."""
    try:
        return groups, pool.reset([g.game_file for g in groups], group_size)
    except Exception:  # noqa: BLE001 - the pool raises the first env's error; find every bad game
        good = []
        for g in groups:
            try:
                pool.reset([g.game_file], group_size)
                good.append(g)
            except Exception as exc:  # noqa: BLE001
                stats.errors.append(f"task {g.task_id} (group {g.group_id}): reset failed: {exc}")
        return good, (pool.reset([g.game_file for g in good], group_size) if good else [])


def _prompts(eps: _Episodes, running: list[int], policy: PolicyBackend, config: RolloutConfig,
             stats: BatchStats) -> tuple[list[int], list[list[int]]]:
    """Token ids of this turn's prompts; episodes whose prompt does not fit the context end here."""
    tok, limit = policy.tokenizer, policy.max_model_len - config.sampling.max_new_tokens
    texts = [chat_prompt(tok, build_prompt(eps.task[k], eps.obs[k], eps.admissible[k], eps.history[k],
                                           config.prompt)) for k in running]
    slots, prompts = [], []
    for k, ids in zip(running, tok(texts, add_special_tokens=False)["input_ids"]):
        if len(ids) <= limit:
            slots.append(k)
            prompts.append(ids)
            continue
        eps.cut(k, "prompt_too_long")
        stats.errors.append(f"task {eps.task_id[k]} episode {eps.eid[k]} step {eps.length[k]}: prompt of "
                            f"{len(ids)} tokens exceeds max_model_len {policy.max_model_len} - max_new_tokens "
                            f"{config.sampling.max_new_tokens} = {limit}; episode truncated")
    return slots, prompts


def play_batch(policy: PolicyBackend, pool: EnvPool, groups: list[Group], config: RolloutConfig,
               round: int, policy_version: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, BatchStats]:
    """Play ``groups`` to the end in lock-step; return (steps, episodes, stats), frames of the tables' schemas.

    >>> import tempfile
    >>> from pipeline.envs import AlfworldEnvConfig, PoolConfig, generate_games
    >>> from pipeline.policy import SamplingConfig, load_policy
    >>> from pipeline.models.tiny_model import make_tiny_model
    >>> cfg = RolloutConfig(group_size=2, sampling=SamplingConfig(max_new_tokens=4),
    ...                     env=AlfworldEnvConfig(max_steps=2), pool=PoolConfig(workers=1))
    >>> game = generate_games(tempfile.mkdtemp(), games=1, seed=0, max_receptacles=5)[0]
    >>> policy = load_policy(str(make_tiny_model(tempfile.mkdtemp())), cfg.policy, cfg.sampling)
    >>> with EnvPool(cfg.env, cfg.pool) as pool:
    ...     steps, episodes, stats = play_batch(policy, pool, [Group(0, "demo", game)], cfg, 0, 0, seed=0)
    >>> steps["episode_id"].to_list(), steps["step"].to_list(), episodes["truncation_reason"].to_list()
    ([0, 0, 1, 1], [0, 1, 0, 1], ['max_steps', 'max_steps'])
    """
    G, stats = config.group_size, BatchStats()
    t0 = time.perf_counter()
    good, starts = _reset(pool, groups, G, stats)
    stats.env_s += time.perf_counter() - t0
    bad = _Episodes([g for g in groups if g not in good], G)
    for k in range(len(bad.eid)):
        bad.end[k] = (False, False, True, "env_error")
    eps = _Episodes(good, G)
    for k, s in enumerate(starts):
        eps.obs[k], eps.task[k], eps.admissible[k] = s.observation, s.task, list(s.admissible_commands)
        eps.state[k], eps.plan[k] = s.state_key, s.expert_plan
    running, turn = list(range(len(starts))), 0
    while running:
        slots, prompts = _prompts(eps, running, policy, config, stats)
        if not slots:
            break
        t0 = time.perf_counter()
        turns = [Turn(eps.admissible[k], eps.plan[k]) for k in slots]
        gens = policy.act(prompts, mix_seed(seed, turn), turns, config.prompt)
        t1 = time.perf_counter()
        parsed = [parse_action(g.text, config.prompt, eps.admissible[k]) for g, k in zip(gens, slots)]
        parsed = [(action if g.played is None else g.played, valid) for g, (action, valid) in zip(gens, parsed)]
        results = pool.step({k: action for k, (action, _) in zip(slots, parsed)})
        stats.generate_s += t1 - t0
        stats.env_s += time.perf_counter() - t1
        for k, ids, gen, (action, valid) in zip(slots, prompts, gens, parsed):
            res = results[k]
            if res.error:
                stats.errors.append(f"task {eps.task_id[k]} episode {eps.eid[k]} step {eps.length[k]}: "
                                    f"{res.truncation_reason}: {res.error}")
            eps.add_row(k, ids, gen, action, valid, res)
            stats.generated_tokens += len(gen.token_ids)
        running = [k for k in slots if eps.end[k] is None]
        turn += 1
    for line in stats.errors:
        log.warning(line)
    steps = eps.steps_frame(round, policy_version)
    episodes = pl.concat([eps.episodes_frame(round, policy_version),
                          bad.episodes_frame(round, policy_version)]).sort("episode_id")
    stats.episodes, stats.steps = episodes.height, steps.height
    return steps, episodes, stats
