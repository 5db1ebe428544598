"""Shared by the round driver tests: start ``pipeline/round.py`` in its own process group, read its
output, kill the whole group, and read a run's tables and manifests.

Every driver runs in a new session, so SIGKILL of its process group reaches the
driver, its LocalCluster (nanny and worker processes) and their env-pool and
trainer children at once, and nothing outlives a test.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil

import storage

ROOT = Path(__file__).resolve().parents[2]
DRIVER = "pipeline/round.py"
CONFIG = "configs/smoke.yaml"
G, TASKS, MAX_STEPS = 2, 2, 3  # episodes per group, groups per round, steps per episode
# The embedded default, shrunk: 2 groups of 2 episodes, 3 steps each, 1 held-out task, on one Dask worker (a second
# worker's start-up costs a driver about 10 s of CPU; tests of work spread over workers set cluster.n_workers=2).
TINY = [f"tasks_per_round={TASKS}", f"rollout.group_size={G}", f"rollout.env.max_steps={MAX_STEPS}",
        "games.generate_train=2", "games.generate_eval=1", "evaluation.tasks=1", "cluster.n_workers=1"]
# One round on one worker, one group per rollout task: collect writes batch 0's shards, then batch 1's.
CRASH = ["rounds=1", "rollout.groups_per_batch=1", "evaluation.before_training=false"]
ROUND_STAGES = ("trajectories", "advantages", "checkpoint", "evaluation", "metrics")
DRIVER_STAGE = {"collect": "trajectories", "advantage": "advantages", "train": "checkpoint",
                "evaluate": "evaluation"}  # stage name the driver prints -> the stage it commits
KEY = ["episode_id", "step"]
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def driver_env() -> dict:
    """The environment of a driver: no inherited scheduler address, so it starts its own LocalCluster."""
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return env | {"PYTHONUNBUFFERED": "1"}


def driver_args(run_dir: Path | str, *extra: str) -> list[str]:
    """``python pipeline/round.py --config configs/smoke.yaml run_dir=... <TINY> <extra>``."""
    return [sys.executable, DRIVER, "--config", CONFIG, f"run_dir={run_dir}", *TINY, *extra]


def group_alive(pgid: int) -> list[psutil.Process]:
    """Processes of process group ``pgid`` that still run (zombies excluded)."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group (no error when it is already gone)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_group_gone(pgid: int, timeout: float = 20.0) -> list[psutil.Process]:
    """Wait until group ``pgid`` has no running process; return those left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def gone(proc: psutil.Process, timeout: float) -> bool:
    """Whether ``proc`` ended (or is a zombie nobody reaps yet) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def default_sigint() -> None:
    """A ``preexec_fn``: the child takes Ctrl-C as a terminal's foreground process does (a background job of a
    non-interactive shell, such as this test run may be, starts with SIGINT ignored, and so would its children)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Driver:
    """A driver process in its own session; its stdout lines (with stderr, unless a file is given for it) are
    collected by a thread."""

    def __init__(self, args: list[str], cwd: Path = ROOT, stderr=subprocess.STDOUT):
        self.proc = subprocess.Popen(args, cwd=cwd, env=driver_env(), stdout=subprocess.PIPE, stderr=stderr,
                                     text=True, bufsize=1, start_new_session=True, preexec_fn=default_sigint)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(STAMP.sub("", line.rstrip("\n")))  # the driver's lines start with HH:MM:SS
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, text: str, timeout: float = 180.0) -> str:
        """Block until a line equal to ``text`` appears; fail naming the output if the driver ends first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if text in self.lines:
                    return text
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line {text!r} from the driver (exit {self.proc.poll()}):\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.5))

    def wait(self, timeout: float = 300.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(30)
        return code

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the whole group, reap the driver; return group processes still running after 20 s."""
        kill_group(self.proc.pid)
        self.proc.wait(30)
        left = wait_group_gone(self.proc.pid)
        self._reader.join(30)
        return left

    def cleanup(self) -> None:
        """For ``finally``: nothing of this driver's group survives the test."""
        kill_group(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.wait(30)
        self._reader.join(10)
        self.proc.stdout.close()


def run_to_end(args: list[str], timeout: float = 300.0) -> tuple[int, str]:
    """Run a driver command to its end: (exit code, merged output); its group must be gone afterwards."""
    driver = Driver(args)
    try:
        code = driver.wait(timeout)
        left = wait_group_gone(driver.proc.pid, timeout=15)
        assert not left, f"processes outlived {args[:3]}: {[p.cmdline() for p in left]}"
        return code, driver.output
    finally:
        driver.cleanup()


def created_at(run: storage.Run, round: int) -> dict[str, str]:
    """``created_at`` of each committed stage of ``round``."""
    return {s: m.created_at for s in ROUND_STAGES if (m := run.manifest(round, s)) is not None}


def tables(run: storage.Run, rounds: list[int]) -> dict[str, pl.DataFrame]:
    """The run's tables in a canonical row order (every committed row)."""
    return {
        "steps": run.read("steps", rounds).sort("round", *KEY),
        "episodes": run.read("episodes", rounds).sort("round", "episode_id"),
        "advantages": run.read("advantages", rounds).sort("round", *KEY),
        "anchor_stats": run.read("anchor_stats", rounds).sort("round", "group_id"),
        "anchor_groups": run.read("anchor_groups", rounds).sort("round", "group_id", "anchor_id"),
        "evaluation": run.read("evaluation", rounds).sort("round", "episode_id"),
    }


def check_round_tables(run: storage.Run, round: int) -> None:
    """Exact shape of one tiny round: TASKS groups x G episodes, each cut after MAX_STEPS steps.

    No ALFWorld task can be won in 3 steps (each needs at least: go to, take,
    go to, put), so every episode is truncated by ``max_steps`` at length 3.
    """
    t = tables(run, [round])
    steps, episodes, adv, stats, evaluation = (t[k] for k in ("steps", "episodes", "advantages", "anchor_stats",
                                                              "evaluation"))
    n_eps = TASKS * G
    assert episodes["episode_id"].to_list() == list(range(n_eps))
    assert episodes["group_id"].to_list() == [g for g in range(TASKS) for _ in range(G)]
    assert episodes["length"].to_list() == [MAX_STEPS] * n_eps
    assert episodes["truncation_reason"].to_list() == ["max_steps"] * n_eps
    assert episodes["policy_version"].unique().to_list() == [round]
    assert steps.height == n_eps * MAX_STEPS
    assert steps.select(KEY).rows() == [(e, s) for e in range(n_eps) for s in range(MAX_STEPS)]
    assert steps["group_id"].to_list() == [e // G for e in range(n_eps) for _ in range(MAX_STEPS)]
    assert steps.select(pl.struct(KEY).is_unique().all()).item()
    assert adv.height == steps.height and adv.select(KEY).rows() == steps.select(KEY).rows()
    assert adv.select(steps.columns).equals(steps)
    assert stats["group_id"].to_list() == list(range(TASKS))
    assert stats["steps"].to_list() == [G * MAX_STEPS] * TASKS and stats["episodes"].to_list() == [G] * TASKS
    assert evaluation.select("episode_id", "policy_version", "length").rows() == [(0, round + 1, MAX_STEPS)]
    groups = t["anchor_groups"].group_by("group_id", maintain_order=True).agg(pl.col("size").sum(), pl.len())
    assert groups.rows() == [(g, G * MAX_STEPS, n) for g, n in zip(range(TASKS), stats["anchor_groups"])]
    assert steps["state_key"].null_count() == 0 and t["anchor_groups"]["pure"].null_count() == 0  # ALFWorld's states
