"""The expert backend on real ALFWorld games: its responses are the env expert's actions in the agent's format."""
from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipeline.envs import AlfworldEnv, AlfworldEnvConfig, EnvPool, PoolConfig, format_response
from pipeline.policy import PolicyConfig, SamplingConfig, load_tokenizer, make_backend
from pipeline.rollout import RolloutConfig, make_groups, play_batch


def _config(expert: str, epsilon: float = 0.0, group_size: int = 1, max_steps: int = 40) -> RolloutConfig:
    return RolloutConfig(group_size=group_size, groups_per_batch=2, policy=PolicyConfig(backend="expert",
                         expert_epsilon=epsilon), sampling=SamplingConfig(max_new_tokens=32),
                         env=AlfworldEnvConfig(max_steps=max_steps, expert=expert), pool=PoolConfig(workers=2))


def _play(tiny_model, games, cfg, seed=0):
    policy = make_backend(tiny_model, cfg.policy, cfg.sampling)
    with EnvPool(cfg.env, cfg.pool) as pool:
        return play_batch(policy, pool, make_groups(games), cfg, round=-1, policy_version=-1, seed=seed)


def _replay(steps: pl.DataFrame, games: list[str], expert: str, group_size: int) -> list[tuple[bool, bool]]:
    """Replay every episode here: (the row's action was the expert's next command, it was admissible)."""
    env, out = AlfworldEnv(AlfworldEnvConfig(max_steps=40, expert=expert)), []
    for eid, rows in steps.sort("episode_id", "step").group_by("episode_id", maintain_order=True):
        state = env.reset(games[eid[0] // group_size])
        for action in rows["action"]:
            out.append((action == state.expert_plan[0], action in state.admissible_commands))
            state = env.step(action)
    return out


@pytest.mark.parametrize("expert", ["handcoded", "planner"])
def test_expert_wins_and_writes_its_actions_as_responses(tiny_model, games, expert):
    steps, episodes, stats = _play(tiny_model, games, _config(expert))
    assert stats.errors == [] and episodes.height == 2
    assert episodes["won"].to_list() == [True, True] and episodes["terminated"].to_list() == [True, True]
    assert steps["policy_version"].unique().to_list() == [-1] and episodes["policy_version"].unique().to_list() == [-1]
    assert steps["round"].unique().to_list() == [-1]
    replay = _replay(steps, games, expert, 1)
    assert all(admissible for _, admissible in replay)
    if expert == "planner":  # the handcoded expert's choices depend on the process's string hashing (set order)
        assert all(chosen for chosen, _ in replay)
    assert steps["action_valid"].all() and steps.filter(pl.col("terminated"))["reward"].to_list() == [10.0, 10.0]
    tok = load_tokenizer(tiny_model)
    for ids, action, logprobs in steps.select("response_ids", "action", "response_logprobs").iter_rows():
        assert tok.decode(ids, skip_special_tokens=True) == format_response(action)
        assert ids[-1] == tok.eos_token_id and logprobs == [0.0] * len(ids)
    assert stats.generated_tokens == steps["response_ids"].list.len().sum()


def test_epsilon_steps_the_env_with_random_actions_the_expert_labels(tiny_model, games):
    cfg, game = _config("planner", epsilon=0.5, group_size=2, max_steps=8), games[:1]
    steps, episodes, _ = _play(tiny_model, game, cfg, seed=3)
    again, episodes_again, _ = _play(tiny_model, game, cfg, seed=3)
    assert_frame_equal(steps, again) and assert_frame_equal(episodes, episodes_again)
    steps = steps.sort("episode_id", "step")
    replay = _replay(steps, game, "planner", 2)  # the action column: what the env was stepped with
    drawn = [not chosen for chosen, _ in replay]
    assert 0 < sum(drawn) < len(drawn) and all(admissible for _, admissible in replay)
    assert steps["action_valid"].all() and not steps["action"].is_in(["", "help"]).any()
    env, labels = AlfworldEnv(AlfworldEnvConfig(max_steps=40, expert="planner")), []
    for _, rows in steps.group_by("episode_id", maintain_order=True):
        state = env.reset(game[0])
        for action in rows["action"]:
            labels.append(format_response(state.expert_plan[0]))
            state = env.step(action)
    tok = load_tokenizer(tiny_model)
    responses = [tok.decode(ids, skip_special_tokens=True) for ids in steps["response_ids"]]
    assert responses == labels  # every response is the expert's choice at the row's state
    assert [r != format_response(a) for r, a in zip(responses, steps["action"])] == drawn
    other, _, _ = _play(tiny_model, game, cfg, seed=4)
    assert not other.select("episode_id", "step", "action").equals(steps.select("episode_id", "step", "action"))


def test_expert_needs_an_env_expert_and_acts_only_on_env_state(tiny_model):
    with pytest.raises(ValueError, match="RolloutConfig.env.expert must name the expert"):
        RolloutConfig(policy=PolicyConfig(backend="expert"))
    with pytest.raises(ValueError, match=r"PolicyConfig.expert_epsilon must be in \[0, 1\], got 1.5"):
        PolicyConfig(expert_epsilon=1.5)
    policy = make_backend(tiny_model, PolicyConfig(backend="expert"), SamplingConfig(max_new_tokens=4))
    with pytest.raises(TypeError, match="acts on the env's state"):
        policy.generate([[1, 2]], seed=0)
    from pipeline.envs import PromptConfig
    from pipeline.policy import Turn
    with pytest.raises(ValueError, match="more than rollout.sampling.max_new_tokens=4"):
        policy.act([[1]], 0, [Turn(["look"], ["go to countertop 1"])], PromptConfig())
