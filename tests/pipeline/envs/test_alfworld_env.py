"""AlfworldEnv on the real textworld/ALFWorld engine: wins, losses, exact texts, bad input."""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys

import pytest

from pipeline.envs.alfworld import INERT, AlfworldEnv, AlfworldEnvConfig, GameFileError, read_game_file, state_key
from pipeline.envs.alfworld_gen import generate_games
from pipeline.envs.pddl import goal_pddl
from pipeline.envs.tasks import TASK_TYPES

# A hand-written ALFWorld problem: apple 1 in a closed cabinet 1, goal "apple on the countertop".
HAND_PROBLEM = """(define (problem hand)
    (:domain alfred)
    (:objects
        agent1 - agent
        AppleType - otype
        CabinetType - rtype
        CounterTopType - rtype
        Apple_bar_1 - object
        Cabinet_bar_1 - receptacle
        CounterTop_bar_1 - receptacle
        loc_bar_0 - location
        loc_bar_1 - location
        loc_bar_2 - location
    )
    (:init
        (= (total-cost) 0)
        (atLocation agent1 loc_bar_0)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleType CounterTop_bar_1 CounterTopType)
        (openable Cabinet_bar_1)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_1)
        (receptacleAtLocation CounterTop_bar_1 loc_bar_2)
        (objectType Apple_bar_1 AppleType)
        (pickupable Apple_bar_1)
        (inReceptacle Apple_bar_1 Cabinet_bar_1)
        (objectAtLocation Apple_bar_1 loc_bar_1)
        (canContain CounterTopType AppleType)
    )
""" + goal_pddl("pick_and_place_simple", "Apple", "CounterTop")


def write_hand_game(folder, problem=HAND_PROBLEM, **extra) -> str:
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    grammar = open(ALFRED_TWL2_PATH).read().replace("UNKNOWN GOAL", "put some apple on countertop")
    data = {"pddl_domain": open(ALFRED_PDDL_PATH).read(), "grammar": grammar, "pddl_problem": problem,
            "solvable": True, **extra}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "game.tw-pddl")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


@pytest.fixture(scope="module")
def games(tmp_path_factory) -> dict[str, str]:
    """One small generated game per task type."""
    root = tmp_path_factory.mktemp("alfdata")
    paths = generate_games(str(root), games=6, seed=11, max_receptacles=6)
    return {json.load(open(os.path.join(os.path.dirname(p), "traj_data.json")))["task_type"]: p for p in paths}


def test_hand_written_game_gives_alfworlds_exact_texts(tmp_path):
    env = AlfworldEnv()
    start = env.reset(write_hand_game(tmp_path / "hand"))
    assert start.observation == ("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. "
                                 "Looking quickly around you, you see a cabinet 1, and a countertop 1.\n\n"
                                 "Your task is to: put some apple on countertop.")
    assert start.task == "put some apple on countertop."
    assert start.admissible_commands == ["go to cabinet 1", "go to countertop 1", "help", "inventory", "look"]
    assert start.expert_plan is None
    script = [
        ("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is closed."),
        ("take apple 1 from cabinet 1", "Nothing happens."),  # closed: not admissible, the game's own reply
        ("open cabinet 1", "You open the cabinet 1. The cabinet 1 is open. In it, you see a apple 1."),
        ("take apple 1 from cabinet 1", "You pick up the apple 1 from the cabinet 1."),
        ("go to countertop 1", "You arrive at countertop 1. On the countertop 1, you see nothing."),
        ("move apple 1 to countertop 1", "You move the apple 1 to the countertop 1."),
    ]
    results = [env.step(action) for action, _ in script]
    assert [r.observation for r in results] == [text for _, text in script]
    assert [r.reward for r in results] == [0.0, 0.0, 0.0, 0.0, 0.0, 10.0]
    assert [r.step for r in results] == [1, 2, 3, 4, 5, 6]
    assert [(r.terminated, r.truncated, r.won) for r in results[-2:]] == [(False, False, False), (True, False, True)]
    assert results[-1].truncation_reason is None
    with pytest.raises(RuntimeError, match="finished episode"):
        env.step("look")


STATE_SCRIPT = ["go to cabinet 1", "take apple 1 from cabinet 1", "go to countertop 1", "take apple 1 from cabinet 1",
                "go to cabinet 1", "open cabinet 1"]
KEYS_CODE = """
import json, sys
from pipeline.envs.alfworld import AlfworldEnv
env = AlfworldEnv()
keys = [env.reset(sys.argv[1]).state_key] + [env.step(a).state_key for a in json.loads(sys.argv[2])]
print(json.dumps(keys))
"""


def test_state_key_is_the_true_state_whatever_the_text(tmp_path):
    game = write_hand_game(tmp_path / "hand")
    env = AlfworldEnv()
    start = env.reset(game)
    results = [env.step(a) for a in STATE_SCRIPT]
    keys = [start.state_key] + [r.state_key for r in results]
    at_cabinet, nothing_1, at_counter, nothing_2, back, opened = keys[1:]
    assert [results[1].observation, results[3].observation] == ["Nothing happens."] * 2
    assert nothing_1 == at_cabinet != nothing_2 == at_counter  # one text, two true states
    assert back == at_cabinet and len({start.state_key, at_cabinet, at_counter, opened}) == 4
    assert all(isinstance(k, int) and 0 <= k < 2**64 for k in keys)
    # a fresh process (another hash seed) plays the same script to the same keys
    env_vars = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", KEYS_CODE, game, json.dumps(STATE_SCRIPT)], env=env_vars,
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == keys


def test_state_key_ignores_fact_order(tmp_path):
    env = AlfworldEnv()
    env.reset(write_hand_game(tmp_path / "hand"))
    env.step("go to cabinet 1")
    facts = [str(f) for f in env._engine.state["_facts"] if not (f.name.startswith("not_") or f.name in INERT)]
    shuffled = facts[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != facts
    assert state_key(shuffled) == state_key(facts) == state_key(sorted(facts, reverse=True))
    assert state_key(facts[1:]) != state_key(facts)
    expected = hashlib.blake2b("\n".join(sorted(facts)).encode(), digest_size=8).digest()
    assert state_key(facts) == int.from_bytes(expected, "little")
    looked = env.step("look")
    assert "checked(loc_bar_1: location)" in [str(f) for f in env._engine.state["_facts"]]
    assert looked.state_key == state_key(facts)  # inert: no precondition or goal reads it


def _when_conditions(effect: str) -> list[str]:
    """The condition of each ``(when COND EFFECT)`` in a PDDL effect (balanced parentheses)."""
    out = []
    for start in [m.end() for m in re.finditer(r"\(when\s*", effect)]:
        depth, i = 0, start
        while True:
            depth += {"(": 1, ")": -1}.get(effect[i], 0)
            i += 1
            if depth == 0:
                break
        out.append(effect[start:i])
    return out


def test_inert_predicates_are_read_by_no_precondition_or_goal():
    import alfworld.gen.goal_library as glib
    from alfworld.info import ALFRED_PDDL_PATH

    domain = re.sub(r";[^\n]*", "", open(ALFRED_PDDL_PATH).read()).lower()
    actions = domain.split("(:action")[1:]
    preconditions = [a.split(":precondition", 1)[1].split(":effect", 1)[0] for a in actions]
    conditions = [c for a in actions for c in _when_conditions(a.split(":effect", 1)[1])]
    assert len(actions) == 15 and all(p.strip() for p in preconditions)
    assert conditions == ["(ison ?o)", "(not (ison ?o))"]
    goals = [task["pddl"].lower() for task in glib.gdict.values()]
    declared = domain.split("(:predicates", 1)[1].split("(:functions", 1)[0]
    for name in INERT:
        assert f"({name} ?" in declared  # an ALFWorld predicate ...
        assert not any(f"({name} " in text for text in preconditions + conditions + goals)  # ... nothing reads


def test_win_reward_is_configurable(tmp_path):
    env = AlfworldEnv(AlfworldEnvConfig(win_reward=1.5))
    env.reset(write_hand_game(tmp_path / "hand"))
    plan = ["go to cabinet 1", "open cabinet 1", "take apple 1 from cabinet 1", "go to countertop 1",
            "move apple 1 to countertop 1"]
    assert [env.step(a).reward for a in plan] == [0.0, 0.0, 0.0, 0.0, 1.5]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_planner_plan_wins_every_task_type(games, task_type):
    env = AlfworldEnv(AlfworldEnvConfig(expert="planner"))
    start = env.reset(games[task_type])
    plan = start.expert_plan
    assert plan and start.task in start.observation
    results = [env.step(action) for action in plan]
    assert [r.reward for r in results] == [0.0] * (len(plan) - 1) + [10.0]
    assert [r.done for r in results] == [False] * (len(plan) - 1) + [True]
    assert (results[-1].won, results[-1].terminated, results[-1].truncated) == (True, True, False)
    assert plan == json.load(open(games[task_type]))["walkthrough"]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_random_admissible_actions_lose_by_truncation(games, task_type):
    env = AlfworldEnv(AlfworldEnvConfig(max_steps=6))
    rng = random.Random(0)
    state = env.reset(games[task_type])
    results = []
    for _ in range(6):
        state = env.step(rng.choice(state.admissible_commands))
        results.append(state)
        if state.done:
            break
    assert [r.reward for r in results] == [0.0] * 6
    assert [r.truncated for r in results] == [False] * 5 + [True]
    assert (results[-1].won, results[-1].terminated, results[-1].truncation_reason) == (False, False, "max_steps")


def test_handcoded_expert_reads_traj_data_and_wins(games):
    random.seed(0)  # the handcoded expert falls back on the global random module
    env = AlfworldEnv(AlfworldEnvConfig(expert="handcoded", max_steps=200))
    for task_type in ("pick_heat_then_place_in_recep", "look_at_obj_in_light"):
        state = env.reset(games[task_type])
        while True:
            state = env.step(state.expert_plan[0])
            if state.done:
                break
        assert (state.won, state.reward) == (True, 10.0)


def test_group_members_and_repeated_resets_see_the_same_start(games):
    game = games["pick_clean_then_place_in_recep"]
    a, b = AlfworldEnv(), AlfworldEnv()
    first = a.reset(game)
    a.step(first.admissible_commands[0])
    assert a.reset(game) == first == b.reset(game)


def test_engine_keeps_the_host_argv(games):
    before = list(sys.argv)
    AlfworldEnv().reset(games["pick_and_place_simple"])
    assert sys.argv == before


def test_bad_game_files_name_their_path(tmp_path):
    env = AlfworldEnv()
    missing = tmp_path / "nowhere" / "game.tw-pddl"
    with pytest.raises(GameFileError, match=f"{missing}: game file not found"):
        env.reset(missing)
    corrupted = tmp_path / "corrupted.tw-pddl"
    corrupted.write_text('{"pddl_domain": "(define')
    with pytest.raises(GameFileError, match=f"{corrupted}: corrupted game file, not JSON"):
        env.reset(corrupted)
    corrupted.write_text(json.dumps({"pddl_domain": "x", "grammar": "y"}))
    with pytest.raises(GameFileError, match=r"missing text fields \['pddl_problem'\]"):
        read_game_file(str(corrupted))
    unsolvable = write_hand_game(tmp_path / "unsolvable", solvable=False)
    with pytest.raises(GameFileError, match=f"{unsolvable}: game is marked unsolvable"):
        env.reset(unsolvable)
    broken = write_hand_game(tmp_path / "broken", problem="(define (problem p) (:domain alfred) (:objects")
    with pytest.raises(GameFileError, match=f"{broken}: cannot load game"):
        env.reset(broken)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="AlfworldEnvConfig.max_steps"):
        AlfworldEnvConfig(max_steps=0)
    with pytest.raises(ValueError, match="AlfworldEnvConfig.expert"):
        AlfworldEnvConfig(expert="oracle")


def _play(game: str, seed: int) -> list:
    """The planner's plan interleaved with seeded random admissible actions: every text and state seen."""
    env = AlfworldEnv(AlfworldEnvConfig(expert="planner", max_steps=40))
    rng = random.Random(seed)
    state = env.reset(game)
    seen = [(state.observation, state.admissible_commands, state.state_key)]
    while not (seen[-1] != seen[0] and (state.won or state.truncated)):
        action = rng.choice(state.admissible_commands) if rng.random() < 0.7 else state.expert_plan[0]
        state = env.step(action)
        seen.append((state.observation, state.admissible_commands, state.state_key))
    return seen


@pytest.mark.parametrize("task_type", ["pick_and_place_simple", "pick_clean_then_place_in_recep"])
def test_memoised_grammar_gives_the_engines_own_texts(games, task_type, monkeypatch):
    from textworld.envs.pddl import logic, textgen
    from textworld.logic import Rule

    cached = _play(games[task_type], seed=3)
    assert _play(games[task_type], seed=3) == cached  # a second env of the game: every parse comes from the caches
    grammar = textgen.ContextSensitiveGrammar
    monkeypatch.setattr(grammar, "derive", grammar.derive.__wrapped__)
    monkeypatch.setattr(grammar, "parse", classmethod(grammar.parse.__wrapped__))
    monkeypatch.setattr(textgen, "_parse_and_convert", textgen._parse_and_convert.__wrapped__)
    monkeypatch.setattr(logic, "_parse_and_convert", logic._parse_and_convert.__wrapped__)
    monkeypatch.setattr(Rule, "parse_conjunctive_query", classmethod(Rule.parse_conjunctive_query.__wrapped__))
    monkeypatch.setattr("pipeline.envs.alfworld.cache_command_texts", lambda: None)
    assert _play(games[task_type], seed=3) == cached
    assert len(cached) > 10
