"""The driver's console: every line it prints starts with the local time; progress bars only on a terminal.

>>> import io
>>> out = io.StringIO()
>>> stamped = Stamped(out, clock=lambda: "12:00:01")
>>> _ = stamped.write("round 0: collect ...\\ncollect: 16 episodes"); _ = stamped.write(" in 2.1 s\\n")
>>> print(out.getvalue(), end="")
12:00:01 round 0: collect ...
12:00:01 collect: 16 episodes in 2.1 s
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Callable, Iterator, TextIO


class Stamped:
    """A text stream that starts each line written to ``out`` with ``clock()`` (``HH:MM:SS``).

    Each thread's text is held until its line ends, so lines printed by two threads at once (a stage run
    alongside another) never run into each other; text with a carriage return (a progress bar's redraw) is
    written at once.
    """

    def __init__(self, out: TextIO, clock: Callable[[], str] = lambda: time.strftime("%H:%M:%S")):
        self.out, self.clock, self.at_line_start = out, clock, True
        self.lock, self.pending = threading.Lock(), {}

    def write(self, text: str) -> int:
        with self.lock:
            me = threading.get_ident()
            held = self.pending.pop(me, "") + text
            if not held.endswith("\n") and "\r" not in held:
                self.pending[me] = held
                return len(text)
            for piece in held.splitlines(keepends=True):
                self._emit(piece)
        return len(text)

    def flush(self) -> None:
        with self.lock:
            held = self.pending.pop(threading.get_ident(), "")
            if held:
                self._emit(held)
        self.out.flush()

    def _emit(self, piece: str) -> None:
        """Write one piece of a line (the caller holds the lock), stamped when it starts a line."""
        if self.at_line_start and piece.strip("\r\n"):
            self.out.write(f"{self.clock()} ")
        self.out.write(piece)
        self.at_line_start = piece.endswith("\n")

    def __getattr__(self, name: str):  # flush, fileno, isatty, encoding, ...: the stream's own
        return getattr(self.out, name)


@contextlib.contextmanager
def stamped_console() -> Iterator[None]:
    """``with stamped_console():`` stdout and stderr lines carry the time; restored afterwards."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Stamped(sys.stdout), Stamped(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def bars_shown(setting: bool | str) -> bool:
    """Whether progress bars are drawn: ``true``, ``false``, or ``"auto"``: when stderr, where tqdm draws them,
    is a terminal (a log file or CI output gets no carriage-return redraws).

    >>> bars_shown(True), bars_shown(False)
    (True, False)
    """
    return sys.stderr.isatty() if setting == "auto" else bool(setting)


def quiet_library_bars() -> None:
    """Hugging Face's own bars (weights loaded, shards written) off in this process and in the worker processes
    it starts after this call (they inherit the environment)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
