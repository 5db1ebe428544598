"""A real collect: tiny model (HF, CPU), generated ALFWorld games on the real engine, a LocalCluster."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask
import polars as pl
import pytest
from distributed import Client, LocalCluster

import storage
from storage.synthetic import synthetic_round

from pipeline.advantage.anchors import text_key
from pipeline.envs import AlfworldEnv, AlfworldEnvConfig, PoolConfig, build_prompt, chat_prompt
from pipeline.envs import parse_action, task_id
from pipeline.policy import CheckpointError, PolicyConfig, SamplingConfig
from pipeline.policy.hf import HFBackend
from pipeline.rollout import RolloutConfig
from pipeline.stages.collect import collect

G = 2
CONFIG = RolloutConfig(group_size=G, groups_per_batch=2, sampling=SamplingConfig(max_new_tokens=16, seed=1),
                       env=AlfworldEnvConfig(max_steps=3), pool=PoolConfig(workers=1),
                       policy=PolicyConfig(num_threads=1), progress=True)


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"distributed.worker.daemon": False}):  # env pools start processes
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as c:
                yield c


@pytest.fixture(scope="module")
def collected(client, tiny_model, games, tmp_path_factory):
    """Round 0 over [game0, a missing game, game1, game0], two groups per task; a crashed attempt's shard
    is lying in the stage before it starts."""
    run = storage.open_run(str(tmp_path_factory.mktemp("run")))
    stray, _ = synthetic_round(round=0, groups=1, group_size=G)
    storage.write_shard(run, 0, "steps", stray, "batch-000099")
    missing = os.path.join(os.path.dirname(games[0]), "..", "gone", "game.tw-pddl")
    tasks = [games[0], missing, games[1], games[0]]
    manifest = collect(client, run, 0, tiny_model, tasks, CONFIG)
    return run, manifest, tasks


def test_every_group_has_g_episodes_with_positional_ids(collected):
    run, manifest, tasks = collected
    episodes = run.read("episodes", [0]).sort("episode_id")
    assert episodes["episode_id"].to_list() == list(range(len(tasks) * G))
    assert episodes["group_id"].to_list() == [g for g in range(len(tasks)) for _ in range(G)]
    assert episodes["task_id"].to_list() == [task_id(t) for t in tasks for _ in range(G)]
    assert episodes["round"].unique().to_list() == [0] and episodes["policy_version"].unique().to_list() == [0]
    assert sorted(f.path for f in manifest.files) == ["episodes/batch-000000.parquet",
                                                      "episodes/batch-000001.parquet",
                                                      "steps/batch-000000.parquet", "steps/batch-000001.parquet"]
    stage = run.stage_dir(0, "trajectories")
    assert not os.path.exists(f"{stage}/steps/batch-000099.parquet")  # the crashed attempt's shard is gone


def test_missing_game_truncates_its_group_only(collected):
    run, _, _ = collected
    episodes = run.read("episodes", [0]).sort("episode_id")
    bad = episodes.filter(pl.col("group_id") == 1)
    assert bad["length"].to_list() == [0, 0] and bad["truncated"].to_list() == [True, True]
    assert bad["truncation_reason"].to_list() == ["env_error", "env_error"]
    good = episodes.filter(pl.col("group_id") != 1)
    # The random policy never wins in 3 steps: every other episode is cut by max_steps.
    assert good["length"].to_list() == [3] * 6 and good["truncation_reason"].to_list() == ["max_steps"] * 6
    assert good["won"].to_list() == [False] * 6 and good["score"].to_list() == [0.0] * 6


def test_steps_are_contiguous_and_flag_only_the_last(collected):
    run, manifest, _ = collected
    steps = run.read("steps", [0])
    assert steps.height == manifest.rows("steps") == 18
    per_episode = steps.group_by("episode_id").agg(pl.col("step").sort(), pl.len()).sort("episode_id")
    assert per_episode["episode_id"].to_list() == [0, 1, 4, 5, 6, 7]
    assert per_episode["step"].to_list() == [[0, 1, 2]] * 6
    assert steps.filter(pl.col("step") < 2)["truncated"].sum() == 0
    assert steps.filter(pl.col("step") == 2)["truncated"].to_list() == [True] * 6
    assert steps["terminated"].sum() == 0


def test_group_members_start_from_one_anchor_state(collected, games):
    run, _, _ = collected
    steps = run.read("steps", [0])
    assert steps["anchor_key"].to_list() == [text_key(o) for o in steps["observation"].to_list()]
    first = steps.filter(pl.col("step") == 0).group_by("group_id").agg(pl.col("anchor_key").n_unique())
    assert first.sort("group_id")["anchor_key"].to_list() == [1, 1, 1]
    start = AlfworldEnv().reset(games[0]).observation
    assert steps.filter((pl.col("step") == 0) & (pl.col("group_id") == 0))["observation"].to_list() == [start] * G


def test_tokens_decode_to_the_logged_text(collected, tiny_model, games):
    run, _, _ = collected
    tok = HFBackend(tiny_model, CONFIG.policy, CONFIG.sampling).tokenizer
    steps = run.read("steps", [0]).sort("episode_id", "step")
    start = AlfworldEnv().reset(games[0])
    expected = chat_prompt(tok, build_prompt(start.task, start.observation, start.admissible_commands))
    row0 = steps.row(0, named=True)
    assert tok.decode(row0["prompt_ids"]) == expected
    for row in steps.iter_rows(named=True):
        text = tok.decode(row["prompt_ids"])
        assert tok(text, add_special_tokens=False)["input_ids"] == row["prompt_ids"]
        assert row["observation"] in text
        reply = tok.decode(row["response_ids"], skip_special_tokens=True)
        assert parse_action(reply, CONFIG.prompt) == (row["action"], row["action_valid"])


def test_logprobs_match_recomputation_on_cpu(collected, tiny_model):
    run, _, _ = collected
    policy = HFBackend(tiny_model, PolicyConfig(), CONFIG.sampling)
    steps = run.read("steps", [0])
    worst = 0.0
    for row in steps.iter_rows(named=True):
        assert len(row["response_ids"]) == len(row["response_logprobs"]) >= 1
        ref = policy.score(row["prompt_ids"], row["response_ids"])
        worst = max(worst, max(abs(a - b) for a, b in zip(ref, row["response_logprobs"])))
    assert worst < 1e-4


def test_rerun_of_a_committed_round_is_a_no_op(collected, client, tiny_model):
    run, manifest, tasks = collected
    stage = run.stage_dir(0, "trajectories")
    before = {f.path: os.stat(f"{stage}/{f.path}").st_mtime_ns for f in manifest.files}
    again = collect(client, run, 0, tiny_model, tasks, CONFIG)
    assert again == manifest and again.created_at == manifest.created_at
    assert {f.path: os.stat(f"{stage}/{f.path}").st_mtime_ns for f in again.files} == before


def test_bad_input_is_refused_before_any_task(client, tiny_model, games, tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'ckpt'}: policy checkpoint directory not found"):
        collect(client, run, 0, str(tmp_path / "ckpt"), games, CONFIG)
    gpu = RolloutConfig(group_size=G, resources={"GPU": 1})
    with pytest.raises(RuntimeError, match=r"RolloutConfig.resources=\{'GPU': 1\}: no Dask worker offers them"):
        collect(client, run, 0, tiny_model, games, gpu)
    with pytest.raises(ValueError, match="collect round 0: no tasks given"):
        collect(client, run, 0, tiny_model, [], CONFIG)
    assert not run.is_committed(0, "trajectories")


def test_a_round_where_no_game_loads_is_not_committed(client, tiny_model, tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    missing = str(tmp_path / "gone" / "game.tw-pddl")
    with pytest.raises(RuntimeError, match="collect round 0: no episode took a step, nothing committed; 1 error"):
        collect(client, run, 0, tiny_model, [missing], CONFIG)
    assert not run.is_committed(0, "trajectories")


# A driver's main module imports distributed, so the env processes its workers start do too, and Dask makes
# exceptions pickle with their cause and traceback there; a pytest process would not show the failure.
DRIVER_SCRIPT = """
import sys

import dask
from distributed import Client, LocalCluster

import storage
from pipeline.envs import AlfworldEnvConfig, PoolConfig
from pipeline.policy import PolicyConfig, SamplingConfig
from pipeline.rollout import RolloutConfig
from pipeline.stages.collect import collect

if __name__ == "__main__":
    tiny_model, run_dir, *tasks = sys.argv[1:]
    config = RolloutConfig(group_size=2, groups_per_batch=2, sampling=SamplingConfig(max_new_tokens=16, seed=1),
                           env=AlfworldEnvConfig(max_steps=3), pool=PoolConfig(workers=1),
                           policy=PolicyConfig(num_threads=1), progress=False)
    with dask.config.set({"distributed.worker.daemon": False}), \\
            LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as c:
        collect(c, storage.open_run(run_dir), 0, tiny_model, tasks, config)
"""


def test_game_with_broken_pddl_is_dropped_with_a_warning(tiny_model, games, tmp_path):
    """Valid JSON whose PDDL problem is cut in half: the engine's parse error comes back from the env process
    as a plain error (unpickling fast_downward's exits the Dask worker); only that group is lost."""
    trial = tmp_path / "pick_and_place_simple-Apple-None-Fridge-1" / "trial_broken"
    shutil.copytree(os.path.dirname(games[0]), trial)
    broken = trial / "game.tw-pddl"
    data = json.loads(broken.read_text())
    broken.write_text(json.dumps(data | {"pddl_problem": data["pddl_problem"][: len(data["pddl_problem"]) // 2]}))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_SCRIPT)
    root = str(Path(__file__).resolve().parents[3])
    path = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run([sys.executable, str(script), tiny_model, str(tmp_path / "run"), games[1], str(broken)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"collect: task {task_id(str(broken))} (group 1): reset failed: {broken}: cannot load game: "
            "ParseError: Missing ')'\n") in done.stdout
    episodes = storage.open_run(str(tmp_path / "run")).read("episodes", [0]).sort("episode_id")
    assert episodes["length"].to_list() == [3, 3, 0, 0]
    assert episodes["truncation_reason"].to_list() == ["max_steps", "max_steps", "env_error", "env_error"]


@pytest.mark.parametrize("kwargs,message", [
    ({"group_size": 0}, "RolloutConfig.group_size must be >= 1"),
    ({"groups_per_batch": 0}, "RolloutConfig.groups_per_batch must be >= 1"),
    ({"resources": {"GPU": -1}}, r"RolloutConfig.resources\['GPU'\] must be a positive number"),
    ({"retries": -1}, "RolloutConfig.retries must be >= 0"),
])
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RolloutConfig(**kwargs)
