"""Dask task keys that name their run.

Dask hands an already-finished task to any client that submits an equal key,
whichever client submitted it first: two runs on one scheduler whose keys
were equal would commit each other's results. Every key the project submits
therefore starts with what the task does, the run's id (``storage.Run.id``)
and the round, then a tag drawn fresh for each submission, so two runs, two
drivers of one run and two attempts of one stage never share a key.

>>> prefix = key_prefix("evaluate", "3f2a9c1d0b7e", -1, tag="ab12cd34")
>>> prefix, f"{prefix}-b0"
('evaluate-3f2a9c1d0b7e-r-1-ab12cd34', 'evaluate-3f2a9c1d0b7e-r-1-ab12cd34-b0')
>>> key_prefix("collect", "3f2a9c1d0b7e", 0) != key_prefix("collect", "3f2a9c1d0b7e", 0)
True
"""
from __future__ import annotations

import uuid


def key_prefix(what: str, run_id: str, round: int | None = None, tag: str | None = None) -> str:
    """``what-<run id>[-r<round>]-<tag>``: the start of this submission's keys (``tag``: fresh unless given)."""
    where = "" if round is None else f"-r{round}"
    return f"{what}-{run_id}{where}-{tag or uuid.uuid4().hex[:8]}"
