"""Anchor strategies: normalised text, structured columns, difflib similarity, MiniLM embeddings."""
from __future__ import annotations

import polars as pl
import pytest

from pipeline.advantage import (
    ANCHORS,
    ESTIMATORS,
    AdvantageConfig,
    anchor_key,
    compute_advantages,
    register_anchor,
    register_estimator,
)
from pipeline.advantage import clustering

APPLE = "You arrive at countertop 1. On the countertop 1, you see a apple 1, a bread 1, and a knife 2."
# difflib ratio 0.9947 to APPLE
AN_APPLE = "You arrive at countertop 1. On the countertop 1, you see an apple 1, a bread 1, and a knife 2."
MUG = "You arrive at countertop 2. On the countertop 2, you see a mug 3."  # ratio 0.747 to APPLE


def texts_frame(frame, texts: list[list[str]], **extra) -> pl.DataFrame:
    """One group; episode e plays texts[e] (reward 1 on the last step of episode 0)."""
    rows = [(0, e, s, float(e == 0 and s == len(ep) - 1), 0) for e, ep in enumerate(texts) for s in range(len(ep))]
    return frame(rows, observation=[t for ep in texts for t in ep], **extra)


def sizes(out: pl.DataFrame) -> list[int]:
    return out.sort("episode_id", "step")["anchor_group_size"].to_list()


def test_anchor_key_is_stable_blake2b_64():
    keys = anchor_key(["You are in the kitchen.", "go to desk 1", "You are in the kitchen."])
    assert keys.dtype == pl.UInt64
    assert keys.to_list() == [7928575499704953429, 11994812410133618315, 7928575499704953429]


def test_anchor_key_of_no_texts_is_an_empty_uint64_series():
    keys = anchor_key(pl.Series([], dtype=pl.String))
    assert (keys.dtype, keys.len()) == (pl.UInt64, 0)


def test_anchor_key_applies_normalizers():
    normalizers = ("strip", "drop_step_counters", "collapse_whitespace")
    keys = anchor_key([" Step 4: go  to desk 1\n", "go to desk 1"], normalizers=normalizers)
    assert keys[0] == keys[1] == 11994812410133618315


def test_anchor_key_rejects_null():
    with pytest.raises(ValueError, match="1 null text"):
        anchor_key(pl.Series([None, "a"], dtype=pl.String))


def test_normalized_merges_whitespace_and_counters(frame):
    texts = [["You are in the kitchen. ", "Step 2: open fridge"], ["You  are in the\nkitchen.", "Step 2: open drawer"]]
    cfg = AdvantageConfig(anchor="normalized", normalizers=("strip", "collapse_whitespace", "drop_step_counters"))
    assert sizes(compute_advantages(texts_frame(frame, texts), cfg)) == [2, 1, 2, 1]
    exact_text = AdvantageConfig(anchor="normalized", normalizers=())
    assert sizes(compute_advantages(texts_frame(frame, texts), exact_text)) == [1, 1, 1, 1]


def test_columns_anchor(frame):
    rows = [(0, e, s, float(e == 0 and s == 1), 0) for e in range(3) for s in range(2)]
    steps = frame(
        rows,
        url=["shop/a", "shop/b", "shop/a", "shop/b", "shop/a", "shop/c"],
        cart=[None, "1 mug", None, "2 mugs", None, "1 mug"],
    )
    out = compute_advantages(steps, AdvantageConfig(anchor="columns", anchor_columns=("url", "cart"), gamma=0.5))
    assert sizes(out) == [3, 1, 3, 1, 3, 1]  # same url, null cart at step 0; carts differ later
    # returns at the shared start: 0.5, 0, 0 -> mean 1/6, std sqrt(1/12)
    assert out.sort("episode_id", "step")["adv_step"][0] == pytest.approx((1 / 3) / ((1 / 12) ** 0.5 + 1e-6))


def test_similarity_merges_near_duplicates_only(frame):
    steps = texts_frame(frame, [[APPLE, MUG], [AN_APPLE, MUG + " "], ["You arrive at fridge 1.", MUG]])
    out = compute_advantages(steps, AdvantageConfig(anchor="similarity"))
    assert sizes(out) == [2, 3, 2, 3, 1, 3]


# ratio(B, A) = ratio(C, B) = 0.8, ratio(C, A) = 0.6
X, A, B, C = "zzzzzzzzzz", "aaaaaaaaaa", "aaaaaaaabb", "aaaaaabbbb"


@pytest.mark.parametrize(("order", "expected"), [("episode", [1, 3, 3, 3]), ("step", [1, 2, 2, 1])])
def test_similarity_is_greedy_first_fit_against_first_member(frame, order, expected):
    steps = texts_frame(frame, [[X, B], [C, A]])
    out = compute_advantages(steps, AdvantageConfig(anchor="similarity", anchor_threshold=0.8, cluster_order=order))
    assert sizes(out) == expected


ROOM = "You are in the middle of a room."
THE_ROOM = "You are in the middle of the room."  # cosine 0.976 to ROOM
APPLE_UP = "You pick up the apple."  # cosine 0.21 to ROOM


def test_embedding_merges_paraphrases_only(frame):
    clustering._EMBED_CACHE.clear()
    steps = texts_frame(frame, [[ROOM, APPLE_UP], [THE_ROOM, "You open the fridge."]])
    out = compute_advantages(steps, AdvantageConfig(anchor="embedding"))
    assert sizes(out) == [2, 1, 2, 1]
    assert len(clustering._EMBED_CACHE) == 4
    strict = compute_advantages(steps, AdvantageConfig(anchor="embedding", anchor_threshold=0.99))
    assert sizes(strict) == [1, 1, 1, 1]


def test_embedding_model_loads_once_and_cache_spares_encoding(frame, monkeypatch):
    steps = texts_frame(frame, [[ROOM, APPLE_UP], [THE_ROOM, ROOM]])
    compute_advantages(steps, AdvantageConfig(anchor="embedding"))
    model = clustering._model("cpu")
    encoded: list[list[str]] = []
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda texts, **kw: encoded.append(list(texts)) or real_encode(texts, **kw))
    again = texts_frame(frame, [[ROOM, "You see a fridge."], [THE_ROOM, ROOM]])
    assert sizes(compute_advantages(again, AdvantageConfig(anchor="embedding"))) == [3, 1, 3, 3]
    assert encoded == [["You see a fridge."]]  # the other texts came from the cache
    assert list(clustering._MODELS) == ["cpu"] and clustering._model("cpu") is model


def test_user_registered_strategy_and_estimator(frame):
    @register_anchor("first_word", columns=lambda cfg: ("observation",))
    def first_word(rows, cfg):
        return rows["observation"].str.split(" ").list.first()

    @register_estimator("double_episode")
    def double(adv_episode, adv_step, cfg):
        return 2 * adv_episode

    try:
        steps = texts_frame(frame, [["open fridge", "go north"], ["open drawer", "look"]])
        out = compute_advantages(steps, AdvantageConfig(anchor="first_word", estimator="double_episode"))
        assert sizes(out) == [2, 1, 2, 1]
        assert out["advantage"].to_list() == (2 * out["adv_episode"]).to_list()
    finally:
        del ANCHORS["first_word"], ESTIMATORS["double_episode"]
