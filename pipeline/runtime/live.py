"""Per-step trainer metrics and the trainer's start-up notes, live on the driver's console while a round trains.

A rank task reads its ``python -m trainer --live`` process's output line by
line (``forward``): every line goes to the rank's log, and each step record
(``trainer.protocol.LIVE_PREFIX``) and note (``NOTE_PREFIX``: "rank 0: model
loaded ...") is also sent to the scheduler as a Dask event under ``TOPIC``. The
driver subscribes for the time of the train stage (``LiveSteps``), prints each
note of the current attempt as it is, each step as one line, and hands each step
record on (to the experiment trackers):

>>> print(step_line({"round": 3, "step": 2, "total": 8, "global_step": 42, "loss": 0.01234, "approx_kl": 1.5e-05,
...                  "entropy": 2.3, "grad_norm": 0.5, "clip_frac": 0.0, "response_length": 11.94,
...                  "tokens_per_s": 4454.2}))  # doctest: +NORMALIZE_WHITESPACE
round 3 step 2/8 (global 42): loss 0.01234, kl 1.5e-05, entropy 2.3, grad norm 0.5, clip 0, response 11.9 tokens,
4454 tokens/s
"""
from __future__ import annotations

import json
import sys
from typing import IO, Callable

from trainer.protocol import LIVE_PREFIX, NOTE_PREFIX, ROUND_PREFIX

TOPIC = "gigpo-train-steps"


def fig(x: float | None) -> str:
    """A figure to 4 significant digits ('-' when absent).

    >>> fig(1.4104144710263763e-07), fig(0.75), fig(None)
    ('1.41e-07', '0.75', '-')
    """
    return "-" if x is None else f"{x:.4g}"


def step_line(m: dict) -> str:
    """One driver line for a trainer step record."""
    line = (f"round {m['round']} step {m['step']}/{m['total']} (global {m['global_step']}): loss {fig(m['loss'])}, "
            f"kl {fig(m['approx_kl'])}, entropy {fig(m['entropy'])}, grad norm {fig(m['grad_norm'])}, "
            f"clip {fig(m['clip_frac'])}, response {m['response_length']:.1f} tokens, "
            f"{m['tokens_per_s']:.0f} tokens/s")
    return line + (f", MFU {100 * m['mfu']:.1f}%" if m.get("mfu") is not None else "")


def emitter(round: int, tag: str, offset: int) -> Callable[[dict], None]:
    """In a rank task: send a step record or note to the driver as a Dask event under ``TOPIC``, tagged ``tag``, a
    step with its ``global_step`` on its axis, ``offset`` + its step (a no-op outside a Dask task)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return lambda m: None
    return lambda m: worker.log_event(TOPIC, m | {"round": round, "tag": tag}
                                      | ({"global_step": offset + m["step"]} if "step" in m else {}))


def forward(stream: IO[bytes], log: IO[str], emit: Callable[[dict], None],
            replies: Callable[[dict], None] | None = None) -> None:
    """Copy ``stream``'s lines to ``log``; ``emit`` each step record and note, and pass each reply of a resident
    trainer (``trainer.protocol.ROUND_PREFIX``) to ``replies`` (until the stream ends)."""
    routes = [(LIVE_PREFIX, emit)] + ([(ROUND_PREFIX, replies)] if replies else [])
    for raw in stream:
        line = raw.decode("utf-8", errors="replace")
        log.write(line)
        log.flush()
        if line.startswith(NOTE_PREFIX):
            emit({"note": line[len(NOTE_PREFIX):].rstrip("\n")})
        for prefix, to in routes:
            if line.startswith(prefix):
                try:
                    to(json.loads(line[len(prefix):]))
                except ValueError:  # a torn or foreign line is kept in the log only
                    pass


class LiveSteps:
    """``with LiveSteps(client, tag, on_step):`` prints the notes and step records of the rank tasks tagged ``tag``
    and passes each step record to ``on_step``."""

    def __init__(self, client, tag: str, on_step: Callable[[dict], None] | None = None, out: IO[str] | None = None):
        self.client, self.tag, self.on_step, self.out = client, tag, on_step, out

    def __enter__(self) -> "LiveSteps":
        self.client.subscribe_topic(TOPIC, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self.client.unsubscribe_topic(TOPIC)

    def _handle(self, event: tuple) -> None:
        _, msg = event
        if msg.get("tag") != self.tag:
            return
        print(msg["note"] if "note" in msg else step_line(msg), file=self.out or sys.stdout, flush=True)
        if "note" not in msg and self.on_step is not None:
            self.on_step(msg)
