"""Run one call in a thread while the ``with`` body runs: ``with alongside(fn, *args): body()``.

On leaving the body normally the thread is joined and its exception, if any,
raised; on leaving it by an exception the thread is not waited for (it is a
daemon, and the cluster it uses closes with the driver), so a failed or
interrupted stage is reported at once.
"""
from __future__ import annotations

import contextlib
import threading


@contextlib.contextmanager
def alongside(fn, *args):
    """Start ``fn(*args)`` in a daemon thread, yield, then join it and re-raise what it raised.

    >>> out = []
    >>> with alongside(out.append, 1):
    ...     out.append(0)
    >>> sorted(out)
    [0, 1]
    """
    failure: list[BaseException] = []

    def target():
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 (raised in the caller's thread)
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"alongside-{getattr(fn, '__name__', 'call')}", daemon=True)
    thread.start()
    yield
    thread.join()
    if failure:
        raise failure[0]
