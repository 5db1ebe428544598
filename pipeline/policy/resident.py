"""Resident engines: a process keeps its policy engine across checkpoints and loads each new one in place.

A new engine is built only when the checkpoint's ``model_identity`` changes
(the architecture: ``config.json`` without the fields that do not shape the
weights or their use; the tokenizer and generation config files, by hash) or the
engine settings do (``PolicyBackend.engine_settings``: the ``PolicyConfig`` and
what of the ``SamplingConfig`` the engine is built with). After an in-place update
``verify_update`` compares a few tensors read back from the engine with the
same tensors read from the checkpoint's safetensors files (``checked_names``:
the embeddings, final norm and head, and every tensor of the first and last
layer, where the engine holds them under the checkpoint's name and shape).

>>> checked_names(["lm_head.weight", "model.layers.0.mlp.w", "model.layers.1.mlp.w", "model.layers.2.mlp.w"])
['lm_head.weight', 'model.layers.0.mlp.w', 'model.layers.2.mlp.w']
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re

# config.json fields that change between exports of one model without changing its weights' shapes or their use.
IGNORED_CONFIG = ("_name_or_path", "transformers_version", "use_cache", "dtype", "torch_dtype")
# Files whose bytes decide tokenization and stop tokens.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def model_identity(path: str) -> tuple[str, str]:
    """The checkpoint's architecture and tokenizer: another checkpoint with the same identity loads in place."""
    with open(os.path.join(path, "config.json")) as fh:
        config = {k: v for k, v in json.load(fh).items() if k not in IGNORED_CONFIG}
    files = hashlib.sha256()
    for name in TOKENIZER_FILES:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, "rb") as fh:
                files.update(name.encode() + b"\0" + hashlib.sha256(fh.read()).digest())
    return json.dumps(config, sort_keys=True), files.hexdigest()


def weight_files(path: str) -> list[str]:
    """The checkpoint's safetensors files, sorted (an in-place update reads only these)."""
    return sorted(glob.glob(os.path.join(path, "*.safetensors")))


def checked_names(names: list[str]) -> list[str]:
    """The tensors compared after an update: those outside the layers, and every tensor of the first and last."""
    layer = {n: int(m.group(1)) for n in names if (m := _LAYER.search(n))}
    ends = {min(layer.values()), max(layer.values())} if layer else set()
    return sorted(n for n in names if n not in layer or layer[n] in ends)


def tensor_digest(tensor) -> str:
    """BLAKE2b of a tensor's bytes (on the CPU, contiguous)."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.blake2b(flat.numpy(), digest_size=16).hexdigest()


def engine_digests(params: dict, shapes: dict[str, list[int]]) -> list[tuple[str, str, str]]:
    """(name, dtype, digest) of each engine tensor ``params[name]`` that holds the checkpoint tensor of shape
    ``shapes[name]`` (vocabulary rows beyond the checkpoint's, an engine's padding, are left out)."""
    out = []
    for name, shape in shapes.items():
        t = params.get(name)
        if t is None or t.dim() != len(shape) or not shape or list(t.shape[1:]) != shape[1:] or t.shape[0] < shape[0]:
            continue
        out.append((name, str(t.dtype).removeprefix("torch."), tensor_digest(t[: shape[0]])))
    return out


def checkpoint_shapes(path: str) -> dict[str, list[int]]:
    """Shapes of the ``checked_names`` tensors of the checkpoint at ``path`` (from the safetensors headers)."""
    from safetensors import safe_open

    shapes = {}
    for file in weight_files(path):
        with safe_open(file, "pt") as f:
            shapes |= {n: list(f.get_slice(n).get_shape()) for n in f.keys()}
    return {n: shapes[n] for n in checked_names(list(shapes))}


def verify_update(path: str, digests: list[tuple[str, str, str]]) -> str | None:
    """None when every engine digest equals the checkpoint tensor's (cast to the engine's dtype), else the first
    tensor that differs, or why nothing could be compared."""
    import torch
    from safetensors import safe_open

    if not digests:
        return "the engine holds none of the checked tensors"
    wanted = {name for name, _, _ in digests}
    tensors = {}
    for file in weight_files(path):
        with safe_open(file, "pt") as f:
            tensors |= {n: f.get_tensor(n) for n in wanted & set(f.keys())}
    for name, dtype, digest in digests:
        if tensor_digest(tensors[name].to(getattr(torch, dtype))) != digest:
            return f"{name} differs"
    return None
