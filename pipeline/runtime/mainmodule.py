"""Start child processes without importing the main module in them again.

A ``spawn`` or ``forkserver`` child first imports its parent's main module (as
``__mp_main__``), so that functions defined there can be unpickled. The
driver's main module is ``pipeline/round.py``: importing it (and with it
``pipeline.driver``) costs ~10 s of CPU (torch, transformers, Dask). A Dask
worker needs those modules anyway, but an env process (``pipeline.envs.pool``) runs only ALFWorld and code that lives in
importable modules.

>>> with main_hidden():
...     sys.modules["__main__"].__spec__ is None
True
"""
from __future__ import annotations

import contextlib
import sys
import threading

_LOCK = threading.Lock()


@contextlib.contextmanager
def main_hidden():
    """Within the block, processes started by ``multiprocessing`` do not import ``__main__``."""
    main = sys.modules["__main__"]
    with _LOCK:
        saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__spec__ = None  # multiprocessing reads it; absent would be an error
        try:
            yield
        finally:
            main.__dict__.update(saved)
