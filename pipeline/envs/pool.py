"""Many ALFWorld environments stepped in parallel worker processes.

Env ``i`` lives in worker ``i % workers``; a worker steps its envs one after
another, workers run side by side. A worker that dies (or stays silent past
``step_timeout_s``) is restarted; its running episodes end truncated with
reason ``"env_crash"``; every other episode goes on untouched. An exception
inside one env ends only that episode (reason ``"env_error"``); it comes back
as a plain ``EnvError``/``GameFileError`` naming the game. A worker process
dies with the process that started the pool.

Inside a Dask worker, set ``distributed.worker.daemon: False``: a daemonic
process may not start these workers. The workers do not import the main
module of the process that starts them (``pipeline.runtime.mainmodule``).

>>> from pipeline.envs.alfworld_gen import generate_games
>>> import tempfile
>>> games = generate_games(tempfile.mkdtemp(), games=2, seed=0, max_receptacles=5)
>>> with EnvPool(config=PoolConfig(workers=2)) as pool:
...     starts = pool.reset(games, group_size=2)
...     out = pool.step({i: "look" for i in pool.active})
>>> len(starts), starts[0].observation == starts[1].observation, sorted(out)
(4, True, [0, 1, 2, 3])
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from pipeline.envs.alfworld import AlfworldEnvConfig, EnvError, GameFileError, ResetResult, StepResult
from pipeline.runtime.lifeline import exit_with_parent
from pipeline.runtime.mainmodule import main_hidden
from pipeline.validators import above, at_least, choice

START_METHODS = ("forkserver", "spawn")
_PRELOAD = ["pipeline.envs.alfworld", "textworld.envs.pddl", "alfworld.agents.environment.alfred_tw_env"]


@dataclass(frozen=True)
class PoolConfig:
    """How many env processes and how to run them."""

    workers: int = 2  # env worker processes (about one per CPU core)
    start_method: str = "forkserver"  # multiprocessing start method; "fork" is unsafe beside threads (Dask)
    step_timeout_s: float = 600.0  # a worker silent this long on one call is killed and treated as crashed

    def __post_init__(self) -> None:
        at_least(self, "workers", 1)
        choice(self, "start_method", START_METHODS)
        above(self, "step_timeout_s", 0)


def _worker_main(conn, env_config: AlfworldEnvConfig) -> None:
    """Worker loop: ("reset", [(slot, game)]) / ("step", [(slot, action)]) / ("close",)."""
    from pipeline.envs.alfworld import AlfworldEnv

    envs: dict[int, AlfworldEnv] = {}
    games: dict[int, str] = {}
    while True:
        msg = conn.recv()
        if msg[0] == "close":
            return
        out = []
        for slot, arg in msg[1]:
            env = envs.get(slot) or envs.setdefault(slot, AlfworldEnv(env_config))
            if msg[0] == "reset":
                games[slot] = arg
            try:
                out.append(env.reset(arg) if msg[0] == "reset" else env.step(arg))
            except Exception as exc:  # one env failing must not take its neighbours down
                out.append(plain_error(exc, games.get(slot)))
        conn.send(out)


def _worker_process(conn, env_config: AlfworldEnvConfig) -> None:
    """An env worker process: dies with the process that started it (a Dask worker killed mid-round)."""
    exit_with_parent()
    _worker_main(conn, env_config)


def plain_error(exc: Exception, game: str | None) -> Exception:
    """``exc`` as a plain project exception holding only its message (and the game), to send to another process.

    An engine exception would bring its module, cause and traceback along (Dask
    makes every exception pickle those): unpickling fast_downward's imports its
    ``options`` module, which parses ``sys.argv`` and exits the receiving process.

    >>> plain_error(KeyError("x"), "g/game.tw-pddl")
    EnvError("g/game.tw-pddl: KeyError: 'x'")
    """
    if isinstance(exc, GameFileError):  # names its game already
        return GameFileError(str(exc))
    return EnvError(f"{game or 'no game loaded'}: {type(exc).__name__}: {exc}")


def _failed(step: int, reason: str, error: str) -> StepResult:
    return StepResult("", 0.0, False, True, False, [], step, reason, None, error)


class EnvPool:
    """Parallel ALFWorld envs: ``reset(tasks, group_size)`` then ``step({env: action})``."""

    def __init__(self, env_config: AlfworldEnvConfig | None = None, config: PoolConfig | None = None) -> None:
        self.env_config = env_config or AlfworldEnvConfig()
        self.config = config or PoolConfig()
        self._ctx = mp.get_context(self.config.start_method)
        if self.config.start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        self._procs: list = [None] * self.config.workers
        self._conns: list = [None] * self.config.workers
        self._games: list[str] = []
        self._steps: list[int] = []
        self._done: list[bool] = []
        self._pending: dict[int, StepResult] = {}  # crash results not yet handed to the caller
        self.crashes = 0  # worker restarts so far
        for w in range(self.config.workers):
            self._start(w)

    def _start(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_process, args=(child, self.env_config), daemon=True,
                                 name=f"alfworld-env-{w}")
        with main_hidden():  # a Dask worker's main module is the driver script: ~10 s of imports
            proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent

    def worker_pids(self) -> list[int]:
        """Process ids of the env workers (for monitoring and tests)."""
        return [p.pid for p in self._procs]

    @property
    def active(self) -> list[int]:
        """Indices of envs whose episode is still running."""
        return [i for i, done in enumerate(self._done) if not done]

    def _call(self, cmd: str, jobs: Mapping[int, Sequence]) -> dict[int, list]:
        """Send each worker its jobs, gather replies; a dead/silent worker maps to None."""
        for w, items in jobs.items():
            try:
                self._conns[w].send((cmd, list(items)))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # noticed as a failed reply below
        deadline = time.monotonic() + self.config.step_timeout_s
        replies = {}
        for w in jobs:
            try:
                ok = self._conns[w].poll(max(0.0, deadline - time.monotonic()))
                replies[w] = self._conns[w].recv() if ok else None
            except (EOFError, ConnectionResetError, OSError):
                replies[w] = None
        return replies

    def _restart(self, w: int) -> None:
        proc = self._procs[w]
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        self._conns[w].close()
        self.crashes += 1
        self._start(w)

    def reset(self, tasks: Sequence[str], group_size: int = 1) -> list[ResetResult]:
        """Start ``len(tasks) * group_size`` episodes; env ``k`` plays ``tasks[k // group_size]``."""
        if group_size < 1 or not tasks:
            raise ValueError(f"EnvPool.reset needs tasks and group_size >= 1, got {len(tasks)} tasks, "
                             f"group_size={group_size}")
        games = [str(t) for t in tasks for _ in range(group_size)]
        w_of = self.config.workers
        jobs = {w: [(i, games[i]) for i in range(w, len(games), w_of)] for w in range(w_of)}
        jobs = {w: items for w, items in jobs.items() if items}
        replies = self._call("reset", jobs)
        for w in [w for w, r in replies.items() if r is None]:  # crashed while resetting: retry once
            self._restart(w)
            replies.update(self._call("reset", {w: jobs[w]}))
        results: list = [None] * len(games)
        for w, items in jobs.items():
            if replies[w] is None:
                raise RuntimeError(f"EnvPool: env worker {w} crashed twice while resetting {items[0][1]}")
            for (i, _), res in zip(items, replies[w]):
                if isinstance(res, Exception):
                    raise res
                results[i] = res
        self._games, self._steps, self._done = games, [0] * len(games), [False] * len(games)
        self._pending = {}
        return results

    def step(self, actions: Mapping[int, str]) -> dict[int, StepResult]:
        """Step the running envs named in ``actions``; their results by env index."""
        for i in actions:
            if not 0 <= i < len(self._done) or self._done[i]:
                raise ValueError(f"EnvPool.step: env {i} is not running (running: {self.active})")
        out = {i: self._pending.pop(i) for i in actions if i in self._pending}
        jobs: dict[int, list] = {}
        for i, action in actions.items():
            if i not in out:
                jobs.setdefault(i % self.config.workers, []).append((i, str(action)))
        replies = self._call("step", jobs)
        for w, items in jobs.items():
            if replies[w] is None:
                self._crash(w, served=out)
                continue
            for (i, _), res in zip(items, replies[w]):
                self._steps[i] += 1
                out[i] = _failed(self._steps[i], "env_error", repr(res)) if isinstance(res, Exception) else res
        for i in actions:
            if i not in out:
                out[i] = self._pending.pop(i)
            self._done[i] = out[i].done
        return {i: out[i] for i in actions}

    def _crash(self, w: int, served: Mapping[int, StepResult]) -> None:
        """Restart worker ``w``; each of its running episodes gets an env_crash result on its next step."""
        code = self._procs[w].exitcode
        self._restart(w)
        error = f"env worker {w} died (exit code {code})" if code is not None else f"env worker {w} timed out"
        for i in range(w, len(self._done), self.config.workers):
            if not self._done[i] and i not in served:
                self._steps[i] += 1
                self._pending[i] = _failed(self._steps[i], "env_crash", error)

    def close(self) -> None:
        """Stop every worker process (idempotent)."""
        for w, proc in enumerate(self._procs):
            if proc is None:
                continue
            try:
                self._conns[w].send(("close",))
            except (BrokenPipeError, OSError):
                pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            self._conns[w].close()
            self._procs[w] = None

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if any(p is not None for p in getattr(self, "_procs", [])):
            self.close()
