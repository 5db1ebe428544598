"""EnvPool: parallel worker processes that play exactly like sequential envs and survive crashes."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import threading

import pytest

from pipeline.envs.alfworld import AlfworldEnv, AlfworldEnvConfig, GameFileError
from pipeline.envs.alfworld_gen import generate_games
from pipeline.envs.pool import EnvPool, PoolConfig, _worker_main

CONFIG = AlfworldEnvConfig(max_steps=8)


@pytest.fixture(scope="module")
def games(tmp_path_factory) -> list[str]:
    root = str(tmp_path_factory.mktemp("pooldata"))
    return generate_games(root, games=3, seed=5, max_receptacles=5)


def scripted(env_index: int, admissible: list[str], step: int) -> str:
    """A deterministic policy: pick by (env, step); every 3rd step an unknown command."""
    if step % 3 == 2:
        return "dance with the fridge"
    return random.Random(env_index * 1000 + step).choice(admissible)


def play_sequential(games: list[str], group_size: int) -> list[list]:
    transcripts = []
    for k, game in enumerate(g for g in games for _ in range(group_size)):
        env = AlfworldEnv(CONFIG)
        transcript = [env.reset(game)]
        while len(transcript) == 1 or not transcript[-1].done:
            transcript.append(env.step(scripted(k, transcript[-1].admissible_commands, len(transcript) - 1)))
        transcripts.append(transcript)
    return transcripts


def play_pool(pool: EnvPool, games: list[str], group_size: int) -> list[list]:
    starts = pool.reset(games, group_size)
    transcripts = [[s] for s in starts]
    while pool.active:
        actions = {i: scripted(i, transcripts[i][-1].admissible_commands, len(transcripts[i]) - 1)
                   for i in pool.active[::2] or pool.active}  # step only some of the running envs per call
        for i, res in pool.step(actions).items():
            transcripts[i].append(res)
    return transcripts


def test_pool_matches_sequential_stepping_and_groups_share_the_start(games):
    expected = play_sequential(games, group_size=2)
    with EnvPool(CONFIG, PoolConfig(workers=2)) as pool:
        got = play_pool(pool, games, group_size=2)
    assert got == expected
    assert [t[0].observation for t in got[0::2]] == [t[0].observation for t in got[1::2]]
    assert len({t[0].observation for t in got}) == 3
    assert all(t[-1].truncation_reason == "max_steps" and len(t) == 9 for t in got)


def test_stepping_a_finished_or_unknown_env_is_an_error(games):
    with EnvPool(CONFIG, PoolConfig(workers=1)) as pool:
        pool.reset(games[:1], group_size=2)
        with pytest.raises(ValueError, match=r"env 5 is not running \(running: \[0, 1\]\)"):
            pool.step({5: "look"})
        for _ in range(CONFIG.max_steps):
            pool.step({0: "look"})
        assert pool.active == [1]
        with pytest.raises(ValueError, match="env 0 is not running"):
            pool.step({0: "look"})


def test_killed_worker_truncates_only_its_episodes_and_restarts(games):
    with EnvPool(CONFIG, PoolConfig(workers=2)) as pool:
        starts = pool.reset(games[:2], group_size=2)  # envs 0, 2 on worker 0; envs 1, 3 on worker 1
        first = pool.step({i: "look" for i in range(4)})
        pids = pool.worker_pids()
        os.kill(pids[1], signal.SIGKILL)
        pool._procs[1].join(5)
        out = pool.step({0: "inventory", 1: "inventory", 2: "inventory"})
        assert (out[1].truncated, out[1].truncation_reason, out[1].step) == (True, "env_crash", 2)
        assert "env worker 1 died (exit code -9)" in out[1].error
        assert [out[i].truncation_reason for i in (0, 2)] == [None, None]
        assert out[0].observation == "You are not carrying anything."
        assert pool.active == [0, 2, 3]  # env 3 learns of the crash on its next step
        assert pool.step({3: "look"})[3].truncation_reason == "env_crash"
        assert pool.active == [0, 2] and pool.crashes == 1
        new_pids = pool.worker_pids()
        assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
        assert pool.reset(games[:2], group_size=2) == starts  # the restarted worker plays again
        assert pool.step({i: "look" for i in range(4)}) == first


def test_silent_worker_times_out_as_a_crash(games):
    with EnvPool(CONFIG, PoolConfig(workers=2)) as pool:
        pool.reset(games[:1], group_size=2)  # loading a game can take over 5 s on a loaded 2-core host
        # 5 s: the live worker steps well within it even on a loaded host (1 s was flaky there)
        pool.config = dataclasses.replace(pool.config, step_timeout_s=5.0)
        os.kill(pool.worker_pids()[0], signal.SIGSTOP)
        out = pool.step({0: "look", 1: "look"})
        assert (out[0].truncation_reason, out[0].error) == ("env_crash", "env worker 0 timed out")
        assert out[1].truncation_reason is None


def test_close_leaves_no_worker_processes(games):
    pool = EnvPool(CONFIG, PoolConfig(workers=2))
    pool.reset(games[:1], group_size=1)
    procs = list(pool._procs)
    pool.close()
    pool.close()
    assert [p.is_alive() for p in procs] == [False, False]
    assert [p.exitcode for p in procs] == [0, 0]


def test_bad_game_in_a_reset_names_its_path(games, tmp_path):
    missing = str(tmp_path / "gone" / "game.tw-pddl")
    with EnvPool(CONFIG, PoolConfig(workers=2, start_method="spawn")) as pool:
        with pytest.raises(GameFileError, match=f"{missing}: game file not found"):
            pool.reset([games[0], missing], group_size=1)
    with pytest.raises(ValueError, match="group_size >= 1"):
        EnvPool.reset(pool, games, group_size=0)
    with pytest.raises(ValueError, match="PoolConfig.start_method"):
        PoolConfig(start_method="fork")


def test_worker_isolates_an_env_that_raises():
    parent, child = mp.Pipe()
    worker = threading.Thread(target=_worker_main, args=(child, CONFIG))
    worker.start()
    parent.send(("step", [(0, "look")]))  # slot 0 was never reset: that env raises, the worker lives on
    (reply,) = parent.recv()
    parent.send(("close",))
    worker.join(5)
    assert isinstance(reply, RuntimeError) and "finished episode" in str(reply)
    assert not worker.is_alive()


PLANS_CODE = """
import json, sys
from pipeline.envs.alfworld import AlfworldEnvConfig
from pipeline.envs.pool import EnvPool, PoolConfig

if __name__ == "__main__":
    with EnvPool(AlfworldEnvConfig(max_steps=30, expert="handcoded"), PoolConfig(workers=1)) as pool:
        plans = [[s.expert_plan[0]] for s in pool.reset(json.loads(sys.argv[1]), group_size=4)]
        while pool.active:
            out = pool.step({i: plans[i][-1] for i in pool.active})
            for i, r in out.items():
                if not r.done:
                    plans[i].append(r.expert_plan[0] if r.expert_plan else "look")
    print(json.dumps(plans))
"""


def test_handcoded_expert_plays_the_same_in_every_process_and_episode(games, tmp_path):
    # ALFWorld's handcoded expert draws from the global `random`; each env runs it on its own state,
    # seeded by the game at reset. Without that: 'take apple 1' in one process, 'take apple 2' in another.
    script = tmp_path / "plans.py"
    script.write_text(PLANS_CODE)
    runs = [subprocess.Popen([sys.executable, str(script), json.dumps(games)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)})
            for seed in ("1", "2")]
    plans = [json.loads(run.communicate(timeout=300)[0].splitlines()[-1]) for run in runs]
    assert plans[0] == plans[1]
    assert all(plans[0][g * 4:g * 4 + 4] == [plans[0][g * 4]] * 4 for g in range(3))  # a game's 4 episodes alike
    assert [len(plans[0][g * 4]) for g in range(3)] == [8, 4, 13]  # the three games, each played to the win
