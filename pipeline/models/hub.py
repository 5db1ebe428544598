"""Base models by Hugging Face hub id, resolved once into the local cache and pinned in the run.

``base_model: Qwen/Qwen2.5-1.5B-Instruct`` (``base_model_revision``: a branch,
tag or commit; default ``main``) is resolved by the driver through
``huggingface_hub.snapshot_download``: downloaded where the hub is reachable,
taken from the cache alone under ``HF_HUB_OFFLINE=1``. Workers load the
snapshot folder of the cache (``HF_HOME``), so on a cluster that folder must be
on a filesystem every worker sees. The resolution (id, commit, each file's
content id) is recorded in ``RUN/base_model.json``; a resumed run resolves
that commit again and refuses files that differ from the recorded ones.

>>> is_hub_id("Qwen/Qwen2.5-0.5B-Instruct"), is_hub_id("tiny"), is_hub_id("/models/qwen")
(True, False, False)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pyarrow.fs as pafs

from storage.shards import put_atomic, sha256_of

_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
RECORD = "base_model.json"  # in the run directory


class HubModelError(ValueError):
    """A hub model that cannot be resolved here, or differs from the one the run started with."""


@dataclasses.dataclass(frozen=True)
class HubModel:
    id: str  # the hub repository, e.g. Qwen/Qwen2.5-1.5B-Instruct
    revision: str  # what was asked for: a branch, tag or commit
    commit: str  # the commit it resolved to
    files: dict[str, str]  # file name in the snapshot -> its content id (the hub's blob name, else its SHA-256)
    path: str = dataclasses.field(default="", compare=False)  # the snapshot folder in the local cache


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as ``org/name`` and is no existing local path."""
    return bool(_ID.fullmatch(name)) and not os.path.exists(name)


def resolve(model_id: str, revision: str = "main", offline: bool = False) -> HubModel:
    """The snapshot of ``model_id`` at ``revision`` in the local cache (downloaded first when the hub is reachable,
    unless ``offline``: the cache alone)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(model_id, revision=revision, local_files_only=offline)
    except (OSError, ValueError) as exc:  # not cached and offline, unreachable, unknown, incomplete, malformed id
        fetch = f"hf download {model_id}" + (f" --revision {revision}" if revision != "main" else "")
        raise HubModelError(f"{model_id} (revision {revision}): not in the local Hugging Face cache and not "
                            f"downloadable here ({type(exc).__name__}); fetch it where the hub is reachable with "
                            f"`{fetch}` into a cache this machine reads (HF_HOME)") from exc
    return HubModel(model_id, revision, Path(path).name, _content_ids(Path(path)), path)


def pinned(model_id: str, revision: str, run_root: str) -> HubModel:
    """``model_id`` as the run at ``run_root`` recorded it (resolved at its commit), or resolved now if unrecorded."""
    record = Path(run_root, RECORD)
    if not record.is_file():
        return resolve(model_id, revision)
    was = HubModel(**json.loads(record.read_text()))
    if was.id != model_id:
        raise HubModelError(f"the run started from {was.id} (commit {was.commit}), not {model_id}; "
                            "use a new run_dir for another base model")
    now = resolve(model_id, was.commit)
    if now.files != was.files:
        changed = sorted(set(now.files.items()) ^ set(was.files.items()))
        raise HubModelError(f"{model_id} commit {was.commit}: the cached files differ from the ones the run started "
                            f"with ({', '.join(sorted({name for name, _ in changed}))}); re-download it")
    return dataclasses.replace(now, revision=was.revision)


def record(model: HubModel, run_root: str) -> None:
    """Write ``RUN/base_model.json`` once (whole or not at all)."""
    path = Path(run_root, RECORD)
    if path.is_file():
        return
    doc = json.dumps(dataclasses.asdict(model) | {"path": ""}, indent=1, sort_keys=True)
    put_atomic(pafs.LocalFileSystem(), str(path), doc.encode())


def _content_ids(snapshot: Path) -> dict[str, str]:
    """Each file's content id: the cache's blob name (the hub's SHA-256 or git id) for a link, else its SHA-256."""
    ids = {}
    for f in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        name = f.relative_to(snapshot).as_posix()
        ids[name] = Path(os.path.realpath(f)).name if f.is_symlink() else sha256_of(pafs.LocalFileSystem(), str(f))
    return ids

