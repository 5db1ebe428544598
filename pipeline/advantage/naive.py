"""A straightforward per-row Python GiGPO, written the way verl-agent's loops are.

It is the oracle of the property tests and the baseline ``bench/advantage.py``
measures the engine against; it is not used on any data path. Supports the
``exact``, ``columns``, ``state``, ``composite`` and ``similarity`` anchors.

>>> import polars as pl
>>> steps = pl.DataFrame({"group_id": [0, 0], "episode_id": [0, 1], "step": [0, 0],
...                       "reward": [1.0, 0.0], "anchor_key": [7, 7]})
>>> [round(a, 4) for a in naive_advantages(steps, AdvantageConfig())["adv_episode"]]
[0.7071, -0.7071]
"""
from __future__ import annotations

import math
from collections import defaultdict
from difflib import SequenceMatcher

import polars as pl

from pipeline.advantage.config import AdvantageConfig


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def _normalise(value: float, mean: float, std: float, cfg: AdvantageConfig) -> float:
    return (value - mean) / (std + cfg.epsilon) if cfg.norm == "std" else value - mean


def _identity(row: dict, cfg: AdvantageConfig):
    if cfg.anchor == "exact":
        return row["anchor_key"]
    if cfg.anchor == "columns":
        return tuple(row[c] for c in cfg.anchor_columns)
    if cfg.anchor == "state":
        return row["state_key"]
    if cfg.anchor == "composite":
        return row["anchor_key"], row["admissible_key"]
    raise NotImplementedError(f"naive_advantages does not implement anchor={cfg.anchor!r}")


def _similarity_ids(rows: list[dict], order: list[int], cfg: AdvantageConfig) -> dict[int, tuple]:
    """verl-agent's build_step_group with enable_similarity, per row."""
    ids, clusters = {}, defaultdict(list)  # group -> [first member text]
    for i in order:
        reps = clusters[rows[i]["group_id"]]
        obs = rows[i]["observation"]
        for j, rep in enumerate(reps):
            if SequenceMatcher(None, obs, rep).ratio() >= cfg.anchor_threshold:
                ids[i] = j
                break
        else:
            reps.append(obs)
            ids[i] = len(reps) - 1
    return ids


def naive_advantages(steps: pl.DataFrame, cfg: AdvantageConfig) -> dict[str, list]:
    """Per-row loops: returns the advantage columns as lists in input row order."""
    rows = steps.to_dicts()
    n = len(rows)
    order = sorted(range(n), key=lambda i: (rows[i]["group_id"], rows[i]["episode_id"], rows[i]["step"]))
    invalid = [0.0 if r.get("action_valid", True) else 1.0 for r in rows]

    returns, ep_sum, running, last_ep = [0.0] * n, defaultdict(float), 0.0, None
    for i in reversed(order):
        ep = rows[i]["episode_id"]
        running = rows[i]["reward"] + (cfg.gamma * running if ep == last_ep else 0.0)
        last_ep = ep
        returns[i] = running - cfg.invalid_penalty * invalid[i]
        ep_sum[ep] += rows[i]["reward"]
    scores = [ep_sum[r["episode_id"]] - cfg.invalid_penalty * invalid[i] for i, r in enumerate(rows)]

    id2score, seen = defaultdict(list), set()
    for i in order:
        key = (rows[i]["group_id"], rows[i]["episode_id"])
        if key in seen:
            continue
        id2score[rows[i]["group_id"]].append(scores[i])
        if cfg.episode_stats == "episodes":
            seen.add(key)
    ep_stats = {g: _mean_std(v) if len(v) > 1 else (0.0, 1.0) for g, v in id2score.items()}
    adv_episode = [_normalise(scores[i], *ep_stats[r["group_id"]], cfg) for i, r in enumerate(rows)]

    if cfg.anchor == "similarity":
        if cfg.cluster_order == "step":
            order = sorted(order, key=lambda i: (rows[i]["group_id"], rows[i]["step"], rows[i]["episode_id"]))
        sim = _similarity_ids(rows, order, cfg)
        anchor = [(r["group_id"], sim[i]) for i, r in enumerate(rows)]
    else:
        anchor = [(r["group_id"], _identity(r, cfg)) for r in rows]
    members = defaultdict(list)
    for i in range(n):
        members[anchor[i]].append(returns[i])
    anchor_stats = {key: _mean_std(group) for key, group in members.items()}
    size = [len(members[anchor[i]]) for i in range(n)]
    adv_step = [
        _normalise(returns[i], *anchor_stats[anchor[i]], cfg) if size[i] > 1 else 0.0 for i in range(n)
    ]
    numbers, anchor_id = defaultdict(dict), [0] * n  # group -> {anchor: number in first-appearance order}
    for i in sorted(range(n), key=lambda i: (rows[i]["group_id"], rows[i]["episode_id"], rows[i]["step"])):
        seen = numbers[rows[i]["group_id"]]
        anchor_id[i] = seen.setdefault(anchor[i], len(seen))
    weights = {"gigpo": (1.0, cfg.step_weight), "grpo": (1.0, 0.0), "step_only": (0.0, 1.0)}[cfg.estimator]
    advantage = [weights[0] * e + weights[1] * s for e, s in zip(adv_episode, adv_step)]
    return {
        "step_return": returns,
        "adv_episode": adv_episode,
        "adv_step": adv_step,
        "anchor_group_size": size,
        "advantage": advantage,
        "anchor_id": anchor_id,
    }
