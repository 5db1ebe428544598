"""Bytes a round writes and reads: checkpoint, DeepSpeed state and the step rows (uncompressed bounds).

- the checkpoint (``trainer.checkpoint.export_hf``) holds the live weights: P x 2 bytes in bf16, 4 in fp32;
  it is read by every rollout worker that collects with it and every worker that evaluates it, and each
  train rank reads the policy (and the KL reference) it starts from;
- a DeepSpeed state save holds the module's weights (not with ZeRO-3: they live in the optimizer's
  partitions) and the AdamW state; it is written every ``trainer.save_every`` optimizer steps and, with
  ``trainer.optimizer_state: keep``, once more at the round's end unless that step saved it; the next round's
  ranks each read the module's weights and their part of the AdamW state (ZeRO-0: the whole state);
- step rows: ``prompt_ids`` + ``response_ids`` (int32, at most the sequence bound) and ``response_logprobs``
  (float32, at most the response bound) per row, at most ``env.max_steps`` rows per episode; the advantages
  table adds its fixed-width columns; every train rank reads all of them.

>>> state_saves(steps=25, save_every=4, keep=True), state_saves(8, 4, True), state_saves(8, 0, False)
(7, 2, 0)
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.plan.memory import adam_bytes, weight_bytes
from storage.schemas import ADVANTAGES, STEPS
from trainer.config import TrainerConfig

TOKEN_BYTES = STEPS.field("prompt_ids").type.value_type.bit_width // 8
LOGPROB_BYTES = STEPS.field("response_logprobs").type.value_type.bit_width // 8
ADVANTAGE_ROW_BYTES = sum(f.type.bit_width // 8 for f in ADVANTAGES)  # keys and advantage columns: fixed width


def state_saves(steps: int, save_every: int, keep: bool) -> int:
    """DeepSpeed state saves of a round of ``steps`` optimizer steps (``trainer.updates.train_round``)."""
    periodic = steps // save_every if save_every else 0
    return periodic + int(keep and (not save_every or steps % save_every != 0))


@dataclass(frozen=True)
class Readers:
    """Processes that read a round's checkpoint and rows."""

    collect_workers: int  # workers that collect with the policy (one load each)
    eval_workers: int  # workers that evaluate the new checkpoint (0: not evaluated this round)
    ranks: int


@dataclass(frozen=True)
class RoundTraffic:
    """Bytes of a round's files, and of what is written and read in a round (at the most rows)."""

    checkpoint: int  # the HF export
    state: int  # one DeepSpeed state save (weights + AdamW state)
    saves: tuple[int, int]  # state saves for the fewest and the most rows
    state_read: int  # bytes of the state the next round's ranks read (0: not kept, optimizer_state: reset)
    rows: int  # steps token columns + advantages, at the most rows
    references: int  # checkpoints each rank reads at its start: the policy, and the KL reference
    readers: Readers

    @property
    def written(self) -> int:
        return self.checkpoint + self.saves[1] * self.state + self.rows

    @property
    def read(self) -> int:
        r = self.readers
        ckpt = self.checkpoint * (r.collect_workers + r.eval_workers + r.ranks * self.references)
        return ckpt + self.state_read + r.ranks * self.rows


def row_bytes(seq_len: int, response_len: int) -> int:
    """Bytes of one step row's token columns and advantages, at most."""
    return TOKEN_BYTES * seq_len + LOGPROB_BYTES * response_len + ADVANTAGE_ROW_BYTES


def round_traffic(params: int, cfg: TrainerConfig, optimizer_steps: tuple[int, int], rows: int, row: int,
                  readers: Readers) -> RoundTraffic:
    """What a round of ``cfg`` writes and reads, ``rows`` rows of at most ``row`` bytes."""
    module = 0 if cfg.zero_stage == 3 else params * weight_bytes(cfg.precision)
    adam = params * adam_bytes(cfg.precision)
    keep = cfg.optimizer_state == "keep"
    saves = tuple(state_saves(n, cfg.save_every, keep) for n in optimizer_steps)
    read = readers.ranks * (module + adam) if cfg.zero_stage == 0 else readers.ranks * module + adam
    return RoundTraffic(params * weight_bytes(cfg.precision), module + adam, saves, read if keep else 0, rows * row,
                        1 + (cfg.kl_coef > 0), readers)
