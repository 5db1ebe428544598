"""ALFWorld on its real text engine: textworld's ``PddlEnv`` with ALFWorld's own wrappers.

One ``AlfworldEnv`` plays one game at a time; ``reset(game_file)`` loads a
``game.tw-pddl`` (real ALFWorld data or ``alfworld_gen`` output, same code).
Every result carries ``state_key``, a stable 64-bit hash of the engine's true
state: its PDDL facts, without two kinds that never tell states apart:

- fast-downward's negated atoms (``not_atlocation``): an encoding artefact
  whose presence depends on the path taken, not on the state;
- ``INERT`` predicates, which no action's precondition, conditional effect
  or goal reads (``checked``: a record of having looked or opened;
  ``wasinreceptacle``: where an object has ever been; ...); two states that
  differ only there have the same future, rewards included.

Equal keys mean equal states, whatever the text says.

>>> from pipeline.envs.alfworld_gen import generate_games
>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> game = generate_games(root, games=1, seed=0)[0]
>>> env = AlfworldEnv(AlfworldEnvConfig(expert="planner"))
>>> first = env.reset(game)
>>> last = [env.step(a) for a in first.expert_plan][-1]
>>> last.won, last.reward, last.terminated
(True, 10.0, True)
>>> env.reset(game).state_key == first.state_key != last.state_key
True
>>> env.step("look").state_key == first.state_key  # looking only sets the inert ``checked``
True
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass, field

from pipeline.envs.textgen_cache import cache_command_texts
from pipeline.validators import at_least, choice

EXPERTS = (None, "planner", "handcoded")
_GAME_KEYS = ("pddl_domain", "grammar", "pddl_problem")
TASK_MARKER = "Your task is to: "
NEGATED = "not_"  # textworld's name prefix of fast-downward's negated atoms (no ALFWorld predicate starts so)
# ALFWorld predicates no precondition, conditional effect or goal reads (a test checks the domain and goals)
INERT = frozenset({"checked", "examined", "wasinreceptacle", "isreceptacleobjectfull", "holdsanyreceptacleobject",
                   "full", "moveable"})


class GameFileError(ValueError):
    """A game file or data directory that cannot be played; the message names the path."""


class EnvError(RuntimeError):
    """An env failure reported by an env worker process; the message names the game and the original error."""


@dataclass(frozen=True)
class AlfworldEnvConfig:
    """How one environment plays its games."""

    max_steps: int = 50  # an episode is truncated after this many steps (verl-agent: 50)
    win_reward: float = 10.0  # reward of the winning (last) step; every other step gets 0 (verl-agent: 10)
    expert: str | None = None  # ALFWorld expert to attach: None, "planner" (replans each step) or "handcoded"

    def __post_init__(self) -> None:
        at_least(self, "max_steps", 1)
        choice(self, "expert", EXPERTS)


@dataclass(frozen=True)
class ResetResult:
    """The start of an episode."""

    game_file: str  # path of the game.tw-pddl played
    observation: str  # raw initial env text (the anchor observation of step 0)
    task: str  # task sentence, e.g. "put some apple on countertop."
    admissible_commands: list[str]  # commands the game accepts now
    expert_plan: list[str] | None = None  # expert's next commands (None without an expert)
    state_key: int | None = None  # stable hash of the engine's true state now (see ``state_key``)


@dataclass(frozen=True)
class StepResult:
    """The outcome of one env step."""

    observation: str  # raw env feedback after the action (the next step's anchor observation)
    reward: float  # win_reward on the winning step, else 0
    terminated: bool  # the game reached a terminal state (won)
    truncated: bool  # cut short: max_steps reached, or the env process crashed/failed
    won: bool  # the goal holds
    admissible_commands: list[str]  # commands the game accepts now
    step: int  # steps taken so far in the episode (1 after the first step)
    truncation_reason: str | None = None  # "max_steps", "env_crash", "env_error" or None
    expert_plan: list[str] | None = None  # expert's next commands (None without an expert)
    error: str | None = field(default=None, compare=False)  # the failure behind env_crash/env_error
    state_key: int | None = None  # stable hash of the engine's true state now (None when the step failed)

    @property
    def done(self) -> bool:
        """The episode is over."""
        return self.terminated or self.truncated


def task_sentence(observation: str, where: str) -> str:
    """The task sentence after ``Your task is to: `` (as verl-agent extracts it)."""
    start = observation.find(TASK_MARKER)
    if start < 0:
        raise GameFileError(f"{where}: initial observation has no {TASK_MARKER!r}: {observation[:200]!r}")
    return observation[start + len(TASK_MARKER):].strip()


def state_key(facts) -> int:
    """Stable uint64 key of a true state: BLAKE2b-64 (little endian) of its sorted fact strings.

    Independent of the facts' order, the process and the Python version (never ``hash()``).

    >>> state_key(["b(x)", "a(y)"]) == state_key(["a(y)", "b(x)"]) != state_key(["a(y)"])
    True
    """
    text = "\n".join(sorted(str(f) for f in facts))
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def read_game_file(path: str) -> dict:
    """Load and check a ``game.tw-pddl`` file; raise ``GameFileError`` naming it when unusable."""
    if not os.path.isfile(path):
        raise GameFileError(f"{path}: game file not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GameFileError(f"{path}: corrupted game file, not JSON ({exc})") from exc
    missing = [k for k in _GAME_KEYS if not isinstance(data, dict) or not isinstance(data.get(k), str)]
    if missing:
        raise GameFileError(f"{path}: corrupted game file, missing text fields {missing}")
    if data.get("solvable") is False:
        raise GameFileError(f"{path}: game is marked unsolvable (solvable: false)")
    return data


@contextlib.contextmanager
def _keep_argv():
    # fast_downward's pddl2sas overwrites sys.argv; keep the host process's argv intact.
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


def _cache_translations(size: int = 8) -> None:
    """Memoise fast-downward's PDDL->SAS translation in this process.

    ``PddlEnv`` translates the problem twice on every load *and* every reset
    (~90% of reset time, seconds for a large house); the translation is a pure
    function of (domain, problem, flags) and its result is only read, so the G
    members of a group and repeated resets of one game translate once. Two
    entries per game: the last four games stay cached.
    """
    import fast_downward

    if not hasattr(fast_downward.pddl2sas, "cache_info"):
        fast_downward.pddl2sas = functools.lru_cache(maxsize=size)(fast_downward.pddl2sas)


def make_engine(expert: str | None):
    """ALFWorld's wrapper stack over textworld's PddlEnv (as ``alfworld-generate`` builds it)."""
    _cache_translations()
    cache_command_texts()
    import textworld
    from textworld.envs.pddl import PddlEnv
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredInfos

    infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
    env = AlfredInfos(AlfredDemangler(PddlEnv(infos), shuffle=False))
    return AlfredExpert(env, expert_type=expert) if expert else env


class AlfworldEnv:
    """One ALFWorld game at a time on the real engine (one fast-downward library per env)."""

    def __init__(self, config: AlfworldEnvConfig | None = None) -> None:
        self.config = config or AlfworldEnvConfig()
        self._engine = make_engine(self.config.expert)
        self._random = random.getstate()  # this env's state of the global ``random`` (see ``_own_random``)
        self._loaded: tuple | None = None  # (path, mtime_ns, size) of the loaded game file
        self._steps = 0
        self._done = True

    def reset(self, game_file: str) -> ResetResult:
        """Start ``game_file`` from its initial state (reloads only when the file changes)."""
        game_file = os.fspath(game_file)
        self._done = True  # stays finished if loading fails
        key = _file_key(game_file)
        if key != self._loaded:
            read_game_file(game_file)
            self._loaded = None
            with _keep_argv(), _naming(game_file, "cannot load game"):
                self._engine.load(game_file)
            self._loaded = key
        self._random = random.Random(_game_name(game_file)).getstate()
        with _keep_argv(), _naming(game_file, "cannot reset game"), self._own_random():
            state = self._engine.reset()
        self._steps, self._done = 0, False
        return ResetResult(game_file, state.feedback, task_sentence(state.feedback, game_file),
                           list(state["admissible_commands"]), _plan(state), _state_key(state))

    def step(self, action: str) -> StepResult:
        """Play ``action``; an unknown command gets the game's own reply ("Nothing happens.")."""
        if self._done:
            raise RuntimeError("AlfworldEnv.step called on a finished episode; call reset(game_file) first")
        with self._own_random():
            state, _, _ = self._engine.step(action)
        self._steps += 1
        won = bool(state["won"])
        truncated = not won and self._steps >= self.config.max_steps
        self._done = won or truncated
        return StepResult(state.feedback, self.config.win_reward if won else 0.0, won, truncated, won,
                          list(state["admissible_commands"]), self._steps,
                          "max_steps" if truncated else None, _plan(state), state_key=_state_key(state))

    @contextlib.contextmanager
    def _own_random(self):
        """Run engine calls on this env's own ``random`` state: ALFWorld's handcoded expert draws from the
        unseeded global ``random`` (``random.choice`` among candidate objects), so its plans would change
        with every process and with how envs share one."""
        outer = random.getstate()
        random.setstate(self._random)
        try:
            yield
        finally:
            self._random = random.getstate()
            random.setstate(outer)


def _game_name(path: str) -> str:
    """The game's task folder, trial folder and file name: the same game wherever its data directory is."""
    return "/".join(os.path.normpath(path).split(os.sep)[-3:])


def _file_key(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise GameFileError(f"{path}: game file not found") from exc
    return path, st.st_mtime_ns, st.st_size


def _state_key(state) -> int:
    return state_key(str(f) for f in state["_facts"] if not (f.name.startswith(NEGATED) or f.name in INERT))


def _plan(state) -> list[str] | None:
    plan = state.get("extra.expert_plan")
    return None if plan is None else list(plan)


@contextlib.contextmanager
def _naming(path: str, what: str):
    try:
        yield
    except GameFileError:
        raise
    except Exception as exc:  # the engine's parse errors do not say which file they came from
        raise GameFileError(f"{path}: {what}: {type(exc).__name__}: {exc}") from exc


__all__ = ["AlfworldEnv", "AlfworldEnvConfig", "EnvError", "GameFileError", "ResetResult", "StepResult",
           "make_engine", "read_game_file", "state_key", "task_sentence"]
