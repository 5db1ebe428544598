"""The lock-step loop in-process: replay determinism, a crashed env process, prompts over the context,
a retried batch, daemonic Dask workers."""
from __future__ import annotations

import dataclasses
import os
import signal

import dask
import polars as pl
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

import storage

from pipeline.advantage.anchors import commands_key
from pipeline.envs import (AlfworldEnv, AlfworldEnvConfig, EnvPool, PoolConfig, PromptConfig, build_prompt,
                           chat_prompt)
from pipeline.policy import PolicyConfig, SamplingConfig
from pipeline.policy.hf import HFBackend
from pipeline.rollout import RolloutConfig, make_groups, mix_seed, play_batch, release_resources, rollout_batch
from pipeline.stages.collect import collect

SAMPLING = SamplingConfig(max_new_tokens=8)
CONFIG = RolloutConfig(group_size=2, groups_per_batch=2, sampling=SAMPLING, env=AlfworldEnvConfig(max_steps=3),
                       pool=PoolConfig(workers=2))


@pytest.fixture(scope="module")
def pool():
    with EnvPool(CONFIG.env, CONFIG.pool) as p:
        yield p


def test_same_seed_replays_the_same_batch(tiny_model, games, pool):
    policy = HFBackend(tiny_model, PolicyConfig(), SAMPLING)
    groups = make_groups(games)
    steps, episodes, stats = play_batch(policy, pool, groups, CONFIG, round=2, policy_version=1, seed=mix_seed(4))
    again, episodes_again, _ = play_batch(policy, pool, groups, CONFIG, round=2, policy_version=1,
                                          seed=mix_seed(4))
    assert_frame_equal(steps, again)
    assert_frame_equal(episodes, episodes_again)
    assert (stats.episodes, stats.steps, stats.errors) == (4, 12, [])
    assert stats.generated_tokens == steps["response_ids"].list.len().sum()
    assert steps["round"].unique().to_list() == [2] and steps["policy_version"].unique().to_list() == [1]


def test_rows_carry_the_state_they_acted_on(tiny_model, games, pool):
    policy = HFBackend(tiny_model, PolicyConfig(), SAMPLING)
    groups = make_groups(games)
    steps, _, _ = play_batch(policy, pool, groups, CONFIG, round=0, policy_version=0, seed=mix_seed(5))
    assert steps["state_key"].null_count() == steps["admissible_key"].null_count() == 0
    env, game_of = AlfworldEnv(CONFIG.env), {g.group_id: g.game_file for g in groups}
    for episode in steps.partition_by("episode_id", maintain_order=True):
        now = env.reset(game_of[episode["group_id"][0]])
        for row in episode.iter_rows(named=True):  # replay: each row's keys are those of the state before its action
            assert row["observation"] == now.observation and row["state_key"] == now.state_key
            assert row["admissible_key"] == commands_key(now.admissible_commands)
            now = env.step(row["action"])
    starts = steps.filter(pl.col("step") == 0).group_by("group_id").agg(pl.col("state_key").n_unique())
    assert starts["state_key"].to_list() == [1] * len(groups)  # a group starts from one true state


class _Says:
    """The real policy's tokens, with a fixed reply: 'look' (admissible) in even slots, a made-up action in odd."""

    def __init__(self, policy):
        self.policy, self.tokenizer, self.max_model_len = policy, policy.tokenizer, policy.max_model_len

    def act(self, prompts, seed, turns, prompt):
        gens = self.policy.act(prompts, seed, turns, prompt)
        return [dataclasses.replace(g, text="<action>%s</action>" % ("take 26 from desk 1" if i % 2 else "look"))
                for i, g in enumerate(gens)]


@pytest.mark.parametrize("admissible_only, made_up_valid", [(True, False), (False, True)])
def test_admissible_only_marks_actions_outside_the_commands_invalid(tiny_model, games, pool, admissible_only,
                                                                    made_up_valid):
    config = dataclasses.replace(CONFIG, prompt=PromptConfig(require_think=False, admissible_only=admissible_only))
    policy = _Says(HFBackend(tiny_model, PolicyConfig(), SAMPLING))
    steps, _, _ = play_batch(policy, pool, make_groups(games), config, 0, 0, seed=0)
    assert steps.height == 12
    assert steps.select("action", "action_valid").unique().sort("action").rows() == [
        ("look", True), ("take 26 from desk 1", made_up_valid)]


class _KillsEnvWorker:
    """The real policy, plus: kill env worker process 1 while generating turn 1 (a crashed env)."""

    def __init__(self, policy, pool):
        self.policy, self.pool, self.turn = policy, pool, 0
        self.tokenizer, self.max_model_len = policy.tokenizer, policy.max_model_len

    def act(self, prompts, seed, turns, prompt):
        if self.turn == 1:
            os.kill(self.pool.worker_pids()[1], signal.SIGKILL)
        self.turn += 1
        return self.policy.act(prompts, seed, turns, prompt)


def test_crashed_env_truncates_only_its_episodes(tiny_model, games, pool):
    policy = _KillsEnvWorker(HFBackend(tiny_model, PolicyConfig(), SAMPLING), pool)
    steps, episodes, stats = play_batch(policy, pool, make_groups(games), CONFIG, 0, 0, seed=0)
    # Envs 1 and 3 (member 1 of each group) live in worker 1: their step 1 is the crash.
    assert episodes.sort("episode_id")["truncation_reason"].to_list() == ["max_steps", "env_crash"] * 2
    assert episodes.sort("episode_id")["length"].to_list() == [3, 2, 3, 2]
    crashed = steps.filter(pl.col("episode_id").is_in([1, 3])).sort("episode_id", "step")
    assert crashed["step"].to_list() == [0, 1, 0, 1] and crashed["truncated"].to_list() == [False, True] * 2
    assert len(stats.errors) == 2 and all("env_crash: env worker 1 died" in e for e in stats.errors)
    assert "task pick_and_place_simple-" in stats.errors[0] and "episode 1 step 1" in stats.errors[0]


def test_prompt_over_the_context_ends_the_episode(tiny_model, games, pool):
    plain = HFBackend(tiny_model, PolicyConfig(), SAMPLING)
    start = AlfworldEnv().reset(games[0])
    first = len(plain.tokenizer(chat_prompt(plain.tokenizer, build_prompt(start.task, start.observation,
                                                                          start.admissible_commands)),
                                add_special_tokens=False)["input_ids"])
    # Room for the first prompt exactly; the second (task + history added) is longer.
    policy = HFBackend(tiny_model, PolicyConfig(max_model_len=first + SAMPLING.max_new_tokens), SAMPLING)
    cfg = RolloutConfig(group_size=2, groups_per_batch=1, sampling=SAMPLING, env=CONFIG.env, pool=CONFIG.pool)
    steps, episodes, stats = play_batch(policy, pool, make_groups(games[:1]), cfg, 0, 0, seed=0)
    assert episodes["length"].to_list() == [1, 1]
    assert episodes["truncation_reason"].to_list() == ["prompt_too_long"] * 2
    assert steps["step"].to_list() == [0, 0] and steps["truncated"].to_list() == [True, True]
    assert steps["prompt_ids"].list.len().to_list() == [first, first]
    assert len(stats.errors) == 2
    assert "episode 0 step 1: prompt of " in stats.errors[0]
    assert f"tokens exceeds max_model_len {first + 8} - max_new_tokens 8 = {first}; episode truncated" \
        in stats.errors[0]


def test_a_retried_batch_replaces_its_shards(tiny_model, games, tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    groups = make_groups(games)
    try:
        first = rollout_batch(run, 0, 0, tiny_model, 3, groups, CONFIG)  # an attempt whose result was lost
        retry = rollout_batch(run, 0, 0, tiny_model, 3, groups, CONFIG)
    finally:
        release_resources("restart")
    assert first.steps.path == retry.steps.path == "steps/batch-000003.parquet"
    assert retry.episodes.path == "episodes/batch-000003.parquet"
    manifest = run.commit(0, "trajectories", [retry.steps, retry.episodes], "cfg", 0)
    assert manifest.rows("steps") == retry.stats.steps == 12 and manifest.rows("episodes") == 4
    assert run.read("episodes", [0])["episode_id"].sort().to_list() == [0, 1, 2, 3]


def test_collect_refuses_daemonic_workers(tiny_model, games, tmp_path):
    with dask.config.set({"distributed.worker.daemon": True}):  # Dask's default
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            with pytest.raises(RuntimeError, match="distributed.worker.daemon: False"):
                collect(client, str(tmp_path / "run"), 0, tiny_model, games, CONFIG)
