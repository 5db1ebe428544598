"""The model's shape (a Qwen2 ``config.json``) and its parameter count, without loading any weights.

>>> s = ModelShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
...                num_key_value_heads=1, vocab_size=100, tie_word_embeddings=False)
>>> s.head_dim, s.params
(32, 87104)
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from pipeline.run_config import RunConfig

SOURCE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "vocab_size")


class ShapeError(ValueError):
    """No model shape can be read for the config (the message says why)."""


@dataclass(frozen=True)
class ModelShape:
    """What the memory and size arithmetic needs of a Qwen2-architecture causal LM."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    head_dim: int = 0  # 0: hidden_size // num_attention_heads

    def __post_init__(self) -> None:
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)

    @property
    def layer_params(self) -> int:
        """One decoder layer: q/k/v projections with biases, o without, SwiGLU MLP, two RMSNorm weights."""
        h, q, kv = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        attention = (h * q + q) + 2 * (h * kv + kv) + q * h
        return attention + 3 * h * self.intermediate_size + 2 * h

    @property
    def params(self) -> int:
        """Embedding, layers, final RMSNorm and the LM head (shared with the embedding when tied)."""
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + self.num_hidden_layers * self.layer_params + self.hidden_size + head


def from_config_json(path: str) -> ModelShape:
    """The shape of the ``config.json`` at ``path`` (a file, or a folder holding one)."""
    path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ShapeError(f"{path}: cannot read a model config.json ({exc})") from exc
    missing = [k for k in SOURCE_KEYS if k not in data]
    if missing:
        raise ShapeError(f"{path}: no {', '.join(missing)}; expected a Qwen2-style config.json")
    fields = {f.name for f in dataclasses.fields(ModelShape)}
    return ModelShape(**{k: v for k, v in data.items() if k in fields and v is not None})


def tiny_shape(cfg: RunConfig) -> ModelShape:
    """``base_model: tiny``: ``tiny_model``'s fields over the built-in defaults (the BPE vocabulary's bound)."""
    from pipeline.models.tiny_model import DEFAULT_SHAPE

    tiny = {k: v for k, v in dataclasses.asdict(cfg.tiny_model).items() if k != "tokenizer"}
    return ModelShape(**{**DEFAULT_SHAPE, **tiny})


def model_shape(cfg: RunConfig, model_config: str | None = None) -> tuple[ModelShape, str]:
    """(shape, where it came from): ``model_config``, else the base model's config.json (a hub id from the
    local cache only, never downloaded), else the tiny model's fields."""
    if model_config:
        return from_config_json(model_config), model_config
    if cfg.base_model == "tiny":
        return tiny_shape(cfg), "tiny_model"
    from pipeline.models.hub import HubModelError, is_hub_id, resolve

    path = cfg.base_model
    if is_hub_id(path):
        try:
            path = resolve(path, cfg.base_model_revision, offline=True).path
        except HubModelError as exc:
            raise ShapeError(f"base_model: {exc}; or pass --model-config CONFIG_JSON") from exc
    return from_config_json(path), path
