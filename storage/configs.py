"""Resolved run configs kept in the run directory: ``RUN/configs/<hash>.yaml``.

A driver saves its whole resolved config with an index of the hashes that
manifests record (the whole config's and each section's), so every
manifest's ``config_hash`` resolves to the exact values it stands for.
``derived`` sections are values a stage derives from the config (the warm
start's rollout and trainer settings): saved beside it under their own names.

>>> import storage, tempfile
>>> run = storage.open_run(tempfile.mkdtemp())
>>> path = save_config(run, {"trainer": {"lr": 1e-05}}, {"": "c0ffee0123456789", "trainer": "7ea"})
>>> again = save_config(run, {"trainer": {"lr": 1e-05}}, {"": "c0ffee0123456789"})
>>> path.endswith("/configs/c0ffee0123456789.yaml"), again is None
(True, True)
>>> [(section, values) for _, section, values in find_config(run, "7ea")]
[('trainer', {'lr': 1e-05})]
"""
from __future__ import annotations

import re

import pyarrow.fs as pafs
import yaml

from storage import shards
from storage.errors import CorruptManifest

CONFIGS = "configs"
_SAVED = re.compile(r"[0-9a-f]{16}\.yaml")  # what save_config names a file; other files there are not read


def save_config(run, config: dict, hashes: dict[str, str], derived: dict[str, dict] | None = None) -> str | None:
    """Write ``config`` with its hash index (``""``: the whole config's hash) unless it is saved; its path or None.

    ``derived``: values of sections not in ``config``, by name (their hashes are in ``hashes`` too).
    """
    path = f"{run.root}/{CONFIGS}/{hashes['']}.yaml"
    if run.fs.get_file_info(path).type == pafs.FileType.File:
        return None
    doc = {"config_hash": hashes[""], "sections": {k: v for k, v in hashes.items() if k}, "config": config,
           "derived": derived or {}}
    shards.put_atomic(run.fs, path, yaml.safe_dump(doc, sort_keys=False).encode())
    return path


def _read(run, path: str) -> dict:
    try:
        with run.fs.open_input_stream(path) as src:
            doc = yaml.safe_load(src.read())
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
            raise ValueError("expected a mapping with config_hash, sections and config")
        return doc
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise CorruptManifest(f"{path}: unreadable saved config ({exc})") from exc


def find_config(run, config_hash: str) -> list[tuple[str, str | None, dict]]:
    """Saved configs holding ``config_hash``: (path, section or None for the whole config, its values).

    Only the files ``save_config`` names (``<16 hex digits>.yaml``) are read: a user's YAML beside them is not.
    """
    folder = f"{run.root}/{CONFIGS}"
    found = []
    for info in run.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if not _SAVED.fullmatch(info.base_name):
            continue
        doc = _read(run, info.path)
        if doc.get("config_hash") == config_hash:
            found.append((info.path, None, doc["config"]))
        values = doc["config"] | (doc.get("derived") or {})
        found += [(info.path, s, values.get(s)) for s, h in (doc.get("sections") or {}).items() if h == config_hash]
    return sorted(found, key=lambda item: item[0])
