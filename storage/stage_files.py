"""The names the project writes in a stage folder: the only files a sweep may delete.

A stage folder holds its manifest, temporary ``.tmp-*`` names of atomic
writes, and its own files: ``<table>/<shard>.parquet`` for each table the
stage owns, ``metrics.json`` for the metrics stage, a Hugging Face export for
a checkpoint. Anything else was put there by someone else: a sweep refuses
to run (``ForeignDirectory`` naming it) rather than delete it.

>>> is_ours("trajectories", "steps/batch-000001.parquet"), is_ours("trajectories", "mine.txt")
(True, False)
>>> is_ours("checkpoint", "model-00001-of-00002.safetensors"), is_ours("checkpoint", "notes/model.safetensors")
(True, False)
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import pyarrow.fs as pafs

from storage.errors import ForeignDirectory
from storage.manifest import MANIFEST_NAME
from storage.schemas import TABLE_STAGE
from storage.stage_names import CHECKPOINT_STAGE, METRICS_FILE, METRICS_STAGE

TEMPORARY = (".tmp-*", "*/.tmp-*")
# What a Hugging Face export of a causal LM writes (weights, config, tokenizer, chat template), plus the
# trainer's per-step record, a critic's value head and a fork's source record; an exporter copies only these
# names from its source model.
CHECKPOINT_FILES = (
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json", "config.json",
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "chat_template.jinja",
    "chat_template.json", "train_metrics.jsonl", "_fork.json", "value_head.pt",
)
_OWN = {CHECKPOINT_STAGE: CHECKPOINT_FILES, METRICS_STAGE: (METRICS_FILE,)}


def patterns(stage: str) -> tuple[str, ...]:
    """Glob patterns (``/``-separated, one level each) of the files the project writes in ``stage``'s folder."""
    tables = tuple(f"{table}/*.parquet" for table, owner in TABLE_STAGE.items() if owner == stage)
    return (MANIFEST_NAME, *TEMPORARY, *tables, *_OWN.get(stage, ()))


def is_ours(stage: str, rel: str) -> bool:
    """Whether ``rel`` (a path inside ``stage``'s folder) is a name the project writes there."""
    depth = rel.count("/")
    return any(p.count("/") == depth and fnmatchcase(rel, p) for p in patterns(stage))


def own_files(fs: pafs.FileSystem, stage: str, folder: str, named: set[str]) -> list[tuple[str, str]]:
    """(path, path inside the folder) of each file in ``stage``'s ``folder``; ``ForeignDirectory`` when one is
    neither ``named`` (by a manifest) nor a name the project writes there: such a folder is left as it is."""
    found = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    files = [(i.path, i.path[len(folder) + 1:]) for i in found if i.type == pafs.FileType.File]
    if foreign := [rel for _, rel in files if rel not in named and not is_ours(stage, rel)]:
        raise ForeignDirectory(f"{folder}: holds file(s) the project did not write: {', '.join(foreign[:5])}; "
                               "move them out of the run directory")
    return files


def delete_files(fs: pafs.FileSystem, folder: str, files: list[tuple[str, str]], keep: set[str]) -> None:
    """Delete ``files`` (``own_files``) but the manifest and ``keep``, then the sub-folders left empty."""
    for path, rel in files:
        if rel != MANIFEST_NAME and rel not in keep:
            fs.delete_file(path)
    found = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    for info in sorted(found, key=lambda i: -i.path.count("/")):  # deepest first
        if info.type == pafs.FileType.Directory and not fs.get_file_info(pafs.FileSelector(info.path)):
            fs.delete_dir(info.path)
