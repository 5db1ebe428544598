"""The process's policy: one loaded backend per process, kept across tasks, rounds and checkpoints.

``acquire_policy`` returns the backend already loaded for the same checkpoint
(woken); or, with ``PolicyConfig.resident`` and neither the model
(``resident.model_identity``) nor the engine settings changed, the same engine
with the new sampling settings or the new checkpoint loaded in place (checked
by ``resident.verify_update``: a one-line warning and a fresh engine where it
does not match); or else it closes the old engine and loads a fresh one.

>>> import tempfile
>>> from pipeline.models.tiny_model import make_tiny_model
>>> p = str(make_tiny_model(tempfile.mkdtemp()))
>>> load_policy(p, PolicyConfig(), SamplingConfig()) is load_policy(p, PolicyConfig(), SamplingConfig())
True
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict

from pipeline.policy.base import (FREE_MODES, PolicyBackend, PolicyConfig, SamplingConfig, backend_class,
                                  build_backend, check_checkpoint, verify_checkpoint)
from pipeline.policy.resident import checkpoint_shapes, model_identity, verify_update

log = logging.getLogger(__name__)
_LOADED: dict = {"key": None, "engine": None, "backend": None}
_LOCK = threading.RLock()


def _key(path: str, policy: PolicyConfig, sampling: SamplingConfig) -> tuple:
    stat = os.stat(os.path.join(path, "config.json")) if os.path.isdir(path) else None
    return (os.path.abspath(path), stat and stat.st_mtime_ns, repr(asdict(policy)), repr(asdict(sampling)))


def acquire_policy(path: str, policy: PolicyConfig, sampling: SamplingConfig) -> tuple[PolicyBackend, str]:
    """The process's backend for ``path`` and how it came: ``kept`` (this checkpoint is loaded already; with
    ``resident``, also under other sampling settings of the same engine), ``updated`` (loaded in place) or
    ``loaded`` (a fresh engine; the previous one is closed first)."""
    key = _key(path, policy, sampling)
    with _LOCK:
        backend, loaded = _LOADED["backend"], _LOADED["key"]
        if loaded == key:
            backend.wake()
            return backend, "kept"
        settings = backend_class(policy.backend).engine_settings(policy, sampling)
        engine = model_identity(check_checkpoint(path)), settings
        if policy.resident and _LOADED["engine"] == engine:
            backend.wake()
            same = loaded[:2] == key[:2]  # the same checkpoint files
            if same or _update(backend, verify_checkpoint(path)):
                backend.sampling = sampling
                _LOADED["key"] = key
                return backend, "kept" if same else "updated"
        release_policy("restart")
        backend = build_backend(verify_checkpoint(path), policy, sampling)
        _LOADED.update(key=key, engine=engine, backend=backend)
        return backend, "loaded"


def load_policy(path: str, policy: PolicyConfig, sampling: SamplingConfig) -> PolicyBackend:
    """The process's backend for ``path`` (``acquire_policy``)."""
    return acquire_policy(path, policy, sampling)[0]


def _update(backend: PolicyBackend, path: str) -> bool:
    """Load ``path`` into ``backend`` in place and check it; False (with a warning on failure) if not done."""
    try:
        if not backend.update(path):
            return False
        problem = verify_update(path, backend.weight_digests(checkpoint_shapes(path)))
    except Exception as exc:  # noqa: BLE001 - a failed update may leave the engine half loaded: a fresh one follows
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        log.warning("resident policy: %s: in-place update failed (%s); loading a fresh engine", path, problem)
        return False
    return True


def release_policy(mode: str = "restart") -> str:
    """Free this process's backend: ``sleep`` offloads it, ``restart`` closes it, ``none`` keeps it."""
    if mode not in FREE_MODES:
        raise ValueError(f"release_policy mode must be one of {FREE_MODES}, got {mode!r}")
    with _LOCK:
        backend = _LOADED["backend"]
        if backend is None or mode == "none":
            return mode
        if mode == "sleep":
            backend.sleep()
        else:
            _LOADED.update(key=None, engine=None, backend=None)
            backend.close()
        return mode
