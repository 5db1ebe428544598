"""Outputs derived from the committed metrics stages, completed at every driver start.

A crash right after a round's metrics commit can leave ``RUN/metrics.jsonl``
without that round's line and the trackers without its events; the committed
stages are the truth, so the next driver rebuilds the one and logs the other
(idempotent: a complete run is left as it is).

>>> import tempfile, storage
>>> from pipeline.runtime.trackers import LoggingConfig
>>> run = storage.open_run(tempfile.mkdtemp())
>>> with Trackers(LoggingConfig(tensorboard=True), run) as trackers:
...     complete_derived(run, trackers)
[]
"""
from __future__ import annotations

import storage
from pipeline.records import read_metrics, write_jsonl
from pipeline.runtime.loggers import Trackers


def complete_derived(run: storage.Run, trackers: Trackers) -> list[int]:
    """Rebuild ``metrics.jsonl`` and log the committed rounds the trackers lack; return the rounds logged now."""
    if not read_metrics(run):
        return []
    try:
        write_jsonl(run)
        logged = trackers.catch_up()
    except (storage.RunNotWritable, OSError) as exc:  # a read-only run still reads: derived files wait for a writer
        print(f"warning: {run.root}: derived outputs not completed: {exc}", flush=True)
        return []
    if logged:
        print(f"{run.root}: logged round(s) {logged} to the trackers (left unlogged by an earlier driver)",
              flush=True)
    return logged
