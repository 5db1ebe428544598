"""Advantage rows -> validated flat token arrays -> packed (or padded) micro-batches.

Only ``prompt_ids``, ``response_ids``, ``response_logprobs`` and ``advantage`` are
read. Rows live as flat numpy arrays (prompt + response concatenated per row)
with offsets; a micro-batch is cut from them by index arithmetic, no per-row
Python. Sequences are packed back to back (or right-padded); the loss mask covers
response tokens only.

>>> import polars as pl
>>> df = pl.DataFrame({"prompt_ids": [[5, 6], [7]], "response_ids": [[8], [9, 10]],
...                    "response_logprobs": [[-0.5], [-1.0, -2.0]], "advantage": [1.0, -1.0]})
>>> data = load_rows(df, vocab_size=16, max_seq_len=8)
>>> mb = collate(data, np.array([0, 1]), pad_id=0, old_logprobs=data.rollout_logprobs)
>>> mb.input_ids.tolist(), mb.resp_index.tolist(), mb.mask.tolist()
([[5, 6, 8], [7, 9, 10]], [[1, 0], [3, 4]], [[1.0, 0.0], [1.0, 1.0]])
>>> packed = collate(data, np.array([0, 1]), pad_id=0, old_logprobs=data.rollout_logprobs, packed=True)
>>> packed.input_ids.tolist(), packed.position_ids.tolist(), packed.resp_index.tolist()
([[5, 6, 8, 7, 9, 10]], [[0, 1, 2, 0, 1, 2]], [[1, 0], [3, 4]])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

COLUMNS = ("prompt_ids", "response_ids", "response_logprobs", "advantage")
PAD_ROW = -1  # row index of a padding row in a plan (no tokens in the loss)


class BadRoundError(ValueError):
    """The round's advantage rows cannot be trained on (named column, row and expectation)."""


@dataclass
class RoundData:
    """A round's rows as flat arrays; row i's tokens are ``tokens[seq_start[i]:][:prompt_len[i] + resp_len[i]]``."""

    tokens: np.ndarray  # int64, prompt then response of each row, concatenated
    seq_start: np.ndarray  # int64 [rows], offset of each row in ``tokens``
    prompt_len: np.ndarray  # int64 [rows]
    resp_len: np.ndarray  # int64 [rows]
    resp_start: np.ndarray  # int64 [rows], offset of each row's response in flat per-response-token arrays
    rollout_logprobs: np.ndarray  # float32, flat per response token
    advantage: np.ndarray  # float32 [rows]
    dropped_empty: int  # rows skipped because their response has no tokens
    episode: np.ndarray | None = None  # int64 [rows]: the row's episode, numbered (with ``episodes=True``)
    step: np.ndarray | None = None  # int64 [rows]: the row's step in its episode (with ``episodes=True``)
    returns: np.ndarray | None = None  # float32 [rows]: the critic's value targets (trainer.gae)
    old_values: np.ndarray | None = None  # float32 [rows]: the critic's values at the round's start

    @property
    def n_rows(self) -> int:
        return len(self.advantage)

    @property
    def n_response_tokens(self) -> int:
        return len(self.rollout_logprobs)


def load_rows(source: pl.DataFrame | pl.LazyFrame, vocab_size: int, max_seq_len: int,
              check_logprobs: bool = True, episodes: bool = False) -> RoundData:
    """Read and validate a round's rows (projecting ``COLUMNS``); raise ``BadRoundError`` on bad input.

    Rows with an empty response are dropped (counted in ``dropped_empty``): they hold no token to train.
    ``episodes``: also read ``episode_id`` and ``step`` (and ``round`` when present) into ``episode``/``step``.
    """
    lf = source.lazy()
    names = lf.collect_schema().names()
    keys = ([c for c in ("round",) if c in names] + ["episode_id", "step"]) if episodes else []
    wanted = [*COLUMNS, *keys]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise BadRoundError(f"advantage rows lack column(s) {missing}; expected {wanted}")
    df = lf.select(wanted).collect()
    for col in wanted:
        if df[col].null_count():
            _fail(source, col, int(df[col].is_null().arg_max()), "is null; expected a value")
    adv = df["advantage"].cast(pl.Float64).to_numpy()
    _check_finite(source, "advantage", adv, lambda pos: pos)
    lens = df.select(p=pl.col("prompt_ids").list.len(), r=pl.col("response_ids").list.len(),
                     n=pl.col("response_logprobs").list.len())
    p, r, n = (lens[c].to_numpy().astype(np.int64) for c in ("p", "r", "n"))
    _first(source, "response_logprobs", n != r, lambda i: f"has {n[i]} values for {r[i]} response tokens")
    _first(source, "prompt_ids", p == 0, lambda i: "is empty; the first response token needs a context")
    _first(source, "prompt_ids", p + r > max_seq_len,
           lambda i: f"+ response_ids hold {p[i] + r[i]} tokens; longer than max_seq_len={max_seq_len}")
    keep, dropped = np.flatnonzero(r > 0), int((r == 0).sum())
    df, p, r, adv = df[keep], p[keep], r[keep], adv[keep]
    tokens = _flat(df.select(pl.concat_list("prompt_ids", "response_ids"))[:, 0]).astype(np.int64)
    seq_start = np.cumsum(p + r) - (p + r)
    bad = (tokens < 0) | (tokens >= vocab_size)
    if bad.any():
        pos = int(np.argmax(bad))
        row = int(np.searchsorted(seq_start, pos, side="right") - 1)
        col = "prompt_ids" if pos - seq_start[row] < p[row] else "response_ids"
        _fail(source, col, int(keep[row]), f"holds token id {tokens[pos]} outside the vocabulary [0, {vocab_size})")
    logprobs = _flat(df["response_logprobs"]).astype(np.float32)
    resp_start = np.cumsum(r) - r
    if check_logprobs:
        _check_finite(source, "response_logprobs", logprobs,
                      lambda pos: keep[np.searchsorted(resp_start, pos, side="right") - 1])
    data = RoundData(tokens, seq_start, p, r, resp_start, logprobs, adv.astype(np.float32), dropped)
    if episodes:
        data.episode = df.select(pl.struct(keys[:-1]).rank("dense")).to_series().to_numpy().astype(np.int64)
        data.step = df["step"].to_numpy().astype(np.int64)
    return data


@dataclass
class MicroBatch:
    """Tensors of one micro-batch; ``[B, R]`` tensors are response-aligned (verl's layout), one row per plan row.

    Padded: ``input_ids`` is ``[B, T]``, right-padded. Packed: ``[1, N]``, the rows'
    sequences back to back with no padding, ``position_ids`` restarting at 0 for each
    (the model attends within a sequence only).
    """

    input_ids: torch.Tensor  # [B, T] padded | [1, N] packed
    attention_mask: torch.Tensor | None  # [B, T] padded | None packed
    position_ids: torch.Tensor | None  # None padded | [1, N] packed: each token's position in its own sequence
    resp_index: torch.Tensor  # [B, R] index into the flattened input whose logits predict response token j
    response_ids: torch.Tensor  # [B, R]
    mask: torch.Tensor  # [B, R] 1.0 on response tokens
    advantages: torch.Tensor  # [B, R] the row's advantage on every response token
    old_logprobs: torch.Tensor  # [B, R]
    ref_logprobs: torch.Tensor | None  # [B, R]
    seq_lens: np.ndarray  # [B] real lengths (0 for padding rows)
    returns: torch.Tensor | None = None  # [B] the critic's value targets (0 for padding rows)
    old_values: torch.Tensor | None = None  # [B] the critic's values at the round's start

    @property
    def padding_share(self) -> float:
        """Padded tokens / processed tokens."""
        return 1.0 - float(self.seq_lens.sum()) / self.input_ids.numel()


def collate(data: RoundData, rows: np.ndarray, pad_id: int, old_logprobs: np.ndarray,
            ref_logprobs: np.ndarray | None = None, packed: bool = False) -> MicroBatch:
    """Gather ``rows`` (``PAD_ROW`` = padding row) into a micro-batch, right-padded or ``packed``."""
    real = rows != PAD_ROW
    idx = np.where(real, rows, 0)
    lens = np.where(real, data.prompt_len[idx] + data.resp_len[idx], 0)
    inputs, offset = (_packed if packed else _padded)(data, idx, lens, pad_id)
    r = np.where(real, data.resp_len[idx], 0)
    r_ar = np.arange(max(int(r.max()), 1))
    resp_valid = r_ar < r[:, None]
    resp_pos = data.prompt_len[idx][:, None] + r_ar  # where response token j sits in its sequence
    flat_idx = np.where(resp_valid, data.resp_start[idx][:, None] + r_ar, 0)
    response_ids = np.where(resp_valid, data.tokens[np.where(resp_valid, data.seq_start[idx][:, None] + resp_pos, 0)],
                            pad_id)

    def per_token(flat: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.where(resp_valid, flat[flat_idx], 0.0).astype(np.float32))

    def per_row(values: np.ndarray | None) -> torch.Tensor | None:
        return None if values is None else torch.from_numpy(np.where(real, values[idx], 0.0).astype(np.float32))

    adv = np.where(real, data.advantage[idx], 0.0)[:, None] * resp_valid
    return MicroBatch(
        **inputs,
        resp_index=torch.from_numpy(np.where(resp_valid, offset[:, None] + resp_pos - 1, 0)),  # one position earlier
        response_ids=torch.from_numpy(response_ids),
        mask=torch.from_numpy(resp_valid.astype(np.float32)),
        advantages=torch.from_numpy(adv.astype(np.float32)),
        old_logprobs=per_token(old_logprobs),
        ref_logprobs=None if ref_logprobs is None else per_token(ref_logprobs),
        seq_lens=lens,
        returns=per_row(data.returns),
        old_values=per_row(data.old_values),
    )


def _padded(data: RoundData, idx: np.ndarray, lens: np.ndarray, pad_id: int) -> tuple[dict, np.ndarray]:
    """``[B, T]`` right-padded inputs (a padding row attends to its one pad token); each row's flat offset."""
    width = max(int(lens.max()), 1)
    t_ar = np.arange(width)
    tok_valid = t_ar < lens[:, None]
    input_ids = np.where(tok_valid, data.tokens[np.where(tok_valid, data.seq_start[idx][:, None] + t_ar, 0)], pad_id)
    attention = (t_ar < np.maximum(lens, 1)[:, None]).astype(np.int64)
    inputs = dict(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention), position_ids=None)
    return inputs, np.arange(len(idx)) * width


def _packed(data: RoundData, idx: np.ndarray, lens: np.ndarray, pad_id: int) -> tuple[dict, np.ndarray]:
    """``[1, N]`` sequences back to back, positions restarting per sequence; each row's flat offset.

    A micro-batch of padding rows only holds one pad token (every rank must run a forward).
    """
    total = int(lens.sum())
    offset = np.cumsum(lens) - lens
    pos = np.arange(total) - np.repeat(offset, lens)
    ids = data.tokens[np.repeat(data.seq_start[idx], lens) + pos] if total else np.full(1, pad_id)
    pos = pos if total else np.zeros(1, np.int64)
    inputs = dict(input_ids=torch.from_numpy(ids)[None], attention_mask=None, position_ids=torch.from_numpy(pos)[None])
    return inputs, offset


def make_plan(data: RoundData, cfg, world_size: int) -> np.ndarray:
    """Row indices of every micro-batch: ``[steps, grad_accum, world_size, micro_batch_size]``.

    Each epoch shuffles the rows (seed ``cfg.seed``, epoch), cuts them into as few
    mini-batches of at most ``cfg.mini_batch_size`` rows as hold them, of nearly equal
    size (the free slots filled with ``PAD_ROW``), and sorts each
    mini-batch by length so micro-batches pad little. One accumulation step holds the
    same rows for any ``world_size`` x ``micro_batch_size`` of the same product.

    >>> from trainer.config import TrainerConfig
    >>> data = RoundData(*[np.zeros(0)] * 2, np.ones(5), np.arange(5), np.zeros(5), np.zeros(0), np.zeros(5), 0)
    >>> make_plan(data, TrainerConfig(mini_batch_size=4, micro_batch_size=2, shuffle=False), 1)[:, :, 0].tolist()
    [[[2, 1], [0, -1]], [[4, 3], [-1, -1]]]
    """
    gas, mb = cfg.grad_accum_steps(world_size), cfg.mini_batch_size
    lens = data.prompt_len + data.resp_len
    steps = []
    for epoch in range(cfg.ppo_epochs):
        order = (np.random.default_rng([cfg.seed, epoch]).permutation(data.n_rows) if cfg.shuffle
                 else np.arange(data.n_rows))
        order = _spread(order, mb)
        key = np.where(order == PAD_ROW, -1, lens[np.where(order == PAD_ROW, 0, order)])
        steps.append(np.take_along_axis(order, np.argsort(-key, axis=1, kind="stable"), 1))
    return np.concatenate(steps).reshape(-1, gas, world_size, cfg.micro_batch_size)


def _spread(order: np.ndarray, mb: int) -> np.ndarray:
    """``order`` cut into ``ceil(n / mb)`` rows of ``mb`` slots, the rows spread evenly over them.

    An even cut keeps every optimizer step an average over many rows: a remainder
    mini-batch of a few rows would get a whole Adam step of its own.
    """
    steps = max(1, -(-len(order) // mb))
    counts = len(order) // steps + (np.arange(steps) < len(order) % steps)
    which = np.repeat(np.arange(steps), counts)
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.full((steps, mb), PAD_ROW, dtype=np.int64)
    out[which, slot] = order
    return out


def _flat(list_series: pl.Series) -> np.ndarray:
    """Values of a list column, row after row (empty lists contribute nothing)."""
    return list_series.rechunk().to_arrow().flatten().to_numpy(zero_copy_only=False)


def _check_finite(source, col: str, values: np.ndarray, row_of) -> None:
    """Fail on the first non-finite value; ``row_of(position)`` names its row (error path only)."""
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.argmax(bad))
        _fail(source, col, int(row_of(pos)), f"is {values[pos]}; expected a finite number")


def _first(source, col: str, bad: np.ndarray, what) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        _fail(source, col, i, what(i))


def _fail(source, col: str, row: int, what: str) -> None:
    raise BadRoundError(f"advantage rows: column {col!r} of {_row_label(source, row)} {what}")


def _row_label(source, row: int) -> str:
    """'row 3 (episode_id=7, step=2)' when the source carries keys (read only on this error path)."""
    lf = source.lazy()
    keys = [c for c in ("round", "episode_id", "step") if c in lf.collect_schema().names()]
    if not keys:
        return f"row {row}"
    vals = lf.select(keys).slice(row, 1).collect().row(0)
    return f"row {row} (" + ", ".join(f"{k}={v}" for k, v in zip(keys, vals)) + ")"
