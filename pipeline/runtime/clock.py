"""The stage clock: the wall time of each stage the driver runs, kept in ``RUN/rounds/R/_stage_seconds.json``.

A stage found committed on a rerun keeps the time of the run that did it.
``StageClock.current`` names the (round, stage) entered last, for the line a
Ctrl-C prints (``pipeline.runtime.interrupt``).
"""
from __future__ import annotations

import contextlib
import json
import time

import storage
from storage.shards import put_atomic

CLOCK = "_stage_seconds.json"


class StageClock:
    """``with clock("collect", done=run.is_committed(r, TRAJECTORIES_STAGE)):`` times a stage that runs.

    ``StageClock.current`` is the (round, stage) entered last in this process (None before any).
    """

    current: tuple[int, str] | None = None

    def __init__(self, run: storage.Run, round: int):
        self.run, self.round, self.path = run, round, f"{run.root}/rounds/{round:06d}/{CLOCK}"
        try:
            with run.fs.open_input_stream(self.path) as src:
                self.seconds: dict[str, float] = json.loads(src.read())
        except FileNotFoundError:
            self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, stage: str, done: bool):
        StageClock.current = (self.round, stage)
        print(f"round {self.round}: {stage} " + ("(committed)" if done else "..."), flush=True)
        start = time.perf_counter()
        yield
        if not done or stage not in self.seconds:
            self.seconds[stage] = time.perf_counter() - start
            put_atomic(self.run.fs, self.path, json.dumps(self.seconds).encode())
