"""One round of PPO (or SFT) updates: rows -> DeepSpeed steps -> Hugging Face checkpoint.

Every rank reads the whole round (token columns only), builds the same plan and
trains its slice of each accumulation step; the loss of every micro-batch is its
share of the mini-batch loss (normalised by mini-batch totals), so the update does
not depend on how a mini-batch is cut into micro-batches or ranks.

With ``optimizer_state: keep`` the round's final DeepSpeed state (weights and
AdamW moments) stays in ``state_dir`` and the next round loads it
(``optimizer_from``), so two rounds train as one continuous run would.

With a critic (``trainer.critic``) the policy carries a value head: its values at
the round's start turn the rows' step rewards into GAE advantages (``trainer.gae``),
and each micro-batch's loss adds its clipped value loss (``trainer.critic``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from storage import verify_stage_dir
from trainer import checkpoint as ckpt
from trainer.batches import PAD_ROW, BadRoundError, MicroBatch, RoundData, collate, load_rows, make_plan
from trainer.config import TrainerConfig
from trainer.critic import with_value_loss
from trainer.deepspeed_engine import build_engine, global_grad_norm, init_distributed, lr_at, set_lr, use_bf16
from trainer.gae import with_gae
from trainer.host import has_cuda
from trainer.loss import policy_loss, sft_loss
from trainer.model import LogProbModel, count_params, load_causal_lm
from trainer.resident import Resident
from trainer.step_metrics import StepAccumulator, peak_flops, train_flops


@dataclass
class TrainResult:
    """What one ``train_round`` call did."""

    checkpoint: Path  # the exported HF checkpoint directory
    steps: int  # optimizer steps of the whole round
    resumed_from: int  # optimizer steps restored from saved state (not repeated)
    rows: int  # rows trained on
    dropped_empty: int  # rows skipped for an empty response
    metrics: list[dict] = field(default_factory=list)  # one dict per optimizer step taken by this call
    skipped: str | None = None  # why the round was skipped (empty round with empty_round="skip")
    continued: bool = False  # the optimizer state of ``optimizer_from`` (the previous round) was loaded
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of load, engine, logprobs, update, export


class _Clock:
    """Wall seconds per phase: ``mark(name)`` ends phase ``name`` (begun at the previous mark)."""

    def __init__(self) -> None:
        self.last, self.seconds = time.perf_counter(), {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.last = now - self.last, now


def train_round(cfg: TrainerConfig, policy_path: str | Path, rows: pl.DataFrame | pl.LazyFrame,
                out_dir: str | Path, *, ref_path: str | Path | None = None, state_dir: str | Path | None = None,
                optimizer_from: str | Path | None = None, on_step: Callable[[int, int, dict], None] | None = None,
                on_note: Callable[[str], None] | None = None, progress: bool = True,
                resident: Resident | None = None) -> TrainResult:
    """Train ``policy_path`` on a round's advantage rows; export the new policy to ``out_dir``.

    ``rows`` needs ``prompt_ids``, ``response_ids``, ``response_logprobs``, ``advantage``
    (the ``advantages`` table; SFT reads neither log-probs nor advantages). ``ref_path``:
    frozen reference policy for the KL loss (required when ``cfg.kl_coef > 0``).
    ``state_dir``: where DeepSpeed state is kept so a killed run resumes after its last
    saved optimizer step (with ``optimizer_state: keep``, also the round's final state).
    ``optimizer_from``: the previous round's ``state_dir``; with ``keep`` a fresh round
    starts from its state (when there is one). ``on_step(step, total, metrics)``
    runs after each optimizer step (and its state save): steps done, steps of the round, the step's metrics.
    ``on_note(text)`` runs at the end of each start-up phase (rows and engine; round-start log-probs). Joins an
    existing torch.distributed group, or creates a 1-rank one. ``resident``: the engine and reference model a
    resident rank keeps between rounds (``trainer.resident``); the round trains as in a fresh process.

    Example (a real checkpoint directory and an advantages frame ``df``)::

        result = train_round(TrainerConfig(kl_coef=0.0), "ckpt/round0", df, "ckpt/round1")
        result.checkpoint, result.metrics[-1]["loss"]
    """
    from transformers import AutoConfig

    if cfg.kl_coef > 0 and ref_path is None:
        raise ValueError("train_round: TrainerConfig.kl_coef > 0 needs ref_path (the frozen reference policy)")
    # A round's committed checkpoint against its manifest: the weights only once it is known they are read.
    policy_manifest = verify_stage_dir(policy_path, skip=ckpt.WEIGHT_SUFFIXES)
    if ref_path is not None:
        verify_stage_dir(ref_path)
    rank, world = init_distributed()
    clock = _Clock()
    model_cfg = AutoConfig.from_pretrained(policy_path, local_files_only=True)
    max_len = cfg.max_seq_len or model_cfg.max_position_embeddings
    data = load_rows(rows, model_cfg.vocab_size, max_len,
                     check_logprobs=cfg.loss == "ppo" and cfg.old_logprobs == "rollout", episodes=cfg.uses_critic)
    if data.n_rows == 0:
        return _empty_round(cfg, policy_path, out_dir, data, rank)
    clock.mark("load")
    carried = resident.take(cfg, policy_manifest, world, optimizer_from) if resident is not None else None
    if carried is None:
        verify_stage_dir(policy_path)
    engine, lm = carried or build_engine(cfg, policy_path, world)
    fp = ckpt.fingerprint(data, cfg, world)
    done = ckpt.load_state(engine, state_dir, fp)
    continued = done == 0 and cfg.optimizer_state == "keep" and (
        carried is not None or ckpt.load_previous(engine, optimizer_from, cfg))
    clock.mark("engine")
    note = on_note or (lambda text: None)
    engine_note = "engine kept in memory from the round before" if carried else \
        f"model loaded and DeepSpeed engine built in {clock.seconds['engine']:.1f} s"
    note(f"{data.n_rows} rows read in {clock.seconds['load']:.1f} s; {engine_note}"
         + (f"; resuming after step {done}" if done else ""))
    old_flat, ref_flat, values = (data.rollout_logprobs, None, None) if cfg.loss == "sft" else \
        _round_start_logprobs(engine, cfg, data, ref_path, state_dir, fp, rank, world, done, resident)
    if values is not None:  # the rows' advantage is the step's reward: GAE on the critic's values
        data = with_gae(data, values, cfg.critic)
    clock.mark("logprobs")
    if ref_flat is not None or values is not None or (cfg.loss == "ppo" and cfg.old_logprobs == "recompute"):
        note(f"round-start log-probs in {clock.seconds['logprobs']:.1f} s")
    plan = make_plan(data, cfg, world)
    stepper = _Stepper(engine, lm, cfg, data, old_flat, ref_flat, rank, world)
    metrics, saved = [], done
    bar = tqdm(range(done, len(plan)), initial=done, total=len(plan), desc="train steps",
               disable=not progress or rank != 0)
    for step in bar:
        m = stepper.step(plan[step], step, len(plan))
        metrics.append(m)
        bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}")
        if state_dir is not None and cfg.save_every and (step + 1) % cfg.save_every == 0:
            saved = step + 1
            ckpt.save_state(engine, state_dir, saved, fp, rank)
        if on_step is not None:
            on_step(step + 1, len(plan), m)
    keep = cfg.optimizer_state == "keep" and state_dir is not None
    if keep and saved != len(plan):  # the next round starts from this state
        ckpt.save_state(engine, state_dir, len(plan), fp, rank)
    clock.mark("update")
    out = ckpt.export_hf(engine, lm, policy_path, out_dir, rank)
    if not cfg.keep_state and not keep:
        ckpt.clear_state(state_dir, rank)
    if resident is not None and keep:
        resident.hold(engine, lm, cfg, world, state_dir)
    clock.mark("export")
    _report(metrics, rank)
    return TrainResult(out, len(plan), done, data.n_rows, data.dropped_empty, metrics, continued=continued,
                       seconds=clock.seconds)


class _Stepper:
    """Runs one optimizer step (all accumulation micro-batches of this rank)."""

    def __init__(self, engine, lm, cfg: TrainerConfig, data: RoundData, old_flat, ref_flat, rank: int, world: int):
        self.engine, self.cfg, self.data = engine, cfg, data
        self.old_flat, self.ref_flat, self.rank, self.world = old_flat, ref_flat, rank, world
        c = lm.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.flops_shape = (count_params(lm)[1], c.num_hidden_layers, c.num_attention_heads * head_dim)
        self.peak = peak_flops(cfg.peak_flops)
        self.extra = {"with_values": True} if cfg.uses_critic else {}

    def step(self, plan_step: np.ndarray, step: int, total: int) -> dict:
        engine, cfg, data = self.engine, self.cfg, self.data
        real = plan_step[plan_step != PAD_ROW]
        num_tokens, num_seqs = float(data.resp_len[real].sum()), float(len(real))
        lr = lr_at(cfg, step, total)
        set_lr(engine, lr)
        acc, start, pre_norm = StepAccumulator(), time.perf_counter(), float("nan")
        for j, rows in enumerate(plan_step[:, self.rank]):
            mb = _to(collate(data, rows, 0, self.old_flat, self.ref_flat, cfg.packing), engine.device)
            lp, ent, *values = engine(*_inputs(mb), entropy_grad=cfg.entropy_coeff > 0, **self.extra)
            out = sft_loss(lp, ent, mb.mask, cfg, num_tokens, num_seqs) if cfg.loss == "sft" else \
                policy_loss(lp, ent, mb.old_logprobs, mb.advantages, mb.mask, cfg, mb.ref_logprobs, num_tokens,
                            num_seqs)
            if values:
                out = with_value_loss(out, values[0], mb, cfg.critic, num_seqs)
            engine.backward(out.loss * self.world, scale_wrt_gas=False)  # DeepSpeed averages over ranks
            acc.add(out.stats, tokens=int(mb.seq_lens.sum()), processed=mb.input_ids.numel(),
                    flops=train_flops(self.flops_shape[0], mb.seq_lens, *self.flops_shape[1:]))
            if j == len(plan_step) - 1:  # boundary: check before the optimizer applies anything
                if not np.isfinite(loss := acc.loss()):
                    raise FloatingPointError(f"non-finite loss {loss} at optimizer step {step} on rank "
                                             f"{self.rank}; the update was not applied")
                pre_norm = global_grad_norm(engine)
            engine.step()
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        norm = pre_norm if np.isfinite(pre_norm) else engine.get_global_grad_norm()
        norm = float("nan") if norm is None else float(norm)
        if not np.isfinite(norm):  # raise before any export: a NaN policy must never be committed
            raise FloatingPointError(f"non-finite gradient norm at optimizer step {step}")
        m = acc.finish(time.perf_counter() - start, norm, lr, self.peak, self.world)
        m["response_length"] = m["response_tokens"] / max(num_seqs, 1.0)  # mean response tokens per row
        return m


def _round_start_logprobs(engine, cfg, data, ref_path, state_dir, fp, rank, world, done, resident):
    """Old log-probs (rollout or recomputed), reference log-probs and a critic's values, fixed at the round's start.

    A resident rank keeps the reference model on the CPU between rounds.
    """
    stored = ckpt.load_precomputed(state_dir, fp)
    if stored is None and done > 0:
        raise ckpt.StateMismatchError(f"{state_dir!r} holds {done} steps but no {ckpt.PRECOMPUTED}; remove it")
    if stored is None:
        stored = {}
        if cfg.old_logprobs == "recompute" or cfg.uses_critic:  # one forward gives both
            old, values = _logprobs(engine, data, cfg, rank, world, values=cfg.uses_critic)
            if cfg.old_logprobs == "recompute":
                stored["old"] = old
            if values is not None:
                stored["values"] = values
        if cfg.kl_coef > 0:
            dtype = torch.bfloat16 if use_bf16(cfg) else torch.float32
            lm = resident.reference(ref_path, dtype) if resident is not None else load_causal_lm(ref_path, dtype)
            ref = LogProbModel(lm, cfg.temperature, cfg.logit_chunk_tokens).to(engine.device).eval()
            stored["ref"] = _logprobs(ref, data, cfg, rank, world)[0]
            if resident is not None:
                ref.cpu()
            del ref, lm
        if state_dir is not None and stored:
            ckpt.save_precomputed(state_dir, fp, stored, rank)
    old = stored["old"].numpy() if "old" in stored else data.rollout_logprobs
    return old, *(stored[k].numpy() if k in stored else None for k in ("ref", "values"))


@torch.no_grad()
def _logprobs(model, data: RoundData, cfg: TrainerConfig, rank: int, world: int, values: bool = False) \
        -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of every response token under ``model`` (rows split over ranks, then summed), and with
    ``values`` every row's value (a ``CriticModel``)."""
    size = cfg.logprob_micro_batch_size
    rows = np.arange(data.n_rows)
    rows = np.concatenate([rows, np.full(-len(rows) % (size * world), PAD_ROW)]).reshape(-1, world, size)
    flat = torch.zeros(data.n_response_tokens + (data.n_rows if values else 0), dtype=torch.float32)
    dummy = np.zeros(data.n_response_tokens, dtype=np.float32)
    extra = {"with_values": True} if values else {}
    for mine in rows[:, rank]:  # every rank runs the same number of forwards (ZeRO-3 gathers collectively)
        mb = collate(data, mine, 0, dummy, packed=cfg.packing)
        lp, _, *v = model(*_inputs(_to(mb, _device(model))), with_entropy=False, **extra)
        real = mine != PAD_ROW
        idx = data.resp_start[np.where(real, mine, 0)][:, None] + np.arange(mb.mask.shape[1])
        keep = mb.mask.numpy() > 0
        flat[torch.from_numpy(idx[keep])] = lp.float().cpu()[torch.from_numpy(keep)]
        if values:  # after the tokens: one value per row
            flat[torch.from_numpy(data.n_response_tokens + mine[real])] = v[0].float().cpu()[torch.from_numpy(real)]
    if world > 1:
        import torch.distributed as dist

        flat = flat.to(_device(model))
        dist.all_reduce(flat)  # each token (and row) was written by exactly one rank
        flat = flat.cpu()
    if not values:
        return flat, None
    return flat[:data.n_response_tokens].clone(), flat[data.n_response_tokens:].clone()


def mean_logprob(policy_path: str | Path, rows: pl.DataFrame | pl.LazyFrame, cfg: TrainerConfig | None = None) \
        -> float:
    """Mean log-prob of the response tokens of ``rows`` (a token mean) under the policy at ``policy_path``.

    The trainer's own forward (``LogProbModel`` at ``cfg.temperature``, ``cfg.logprob_micro_batch_size``
    rows at a time), in fp32 in this process; ``rows`` need ``prompt_ids`` and ``response_ids`` only.
    Measures how likely a fixed set of responses became (e.g. those of won episodes) as a policy trains.

    Example (a checkpoint directory and a ``steps`` frame)::

        mean_logprob("ckpt/round1", steps.filter(pl.col("episode_id").is_in(won)))
    """
    from transformers import AutoConfig

    cfg = cfg or TrainerConfig()
    model_cfg = AutoConfig.from_pretrained(policy_path, local_files_only=True)
    tokens = rows.lazy().select("prompt_ids", "response_ids").with_columns(
        response_logprobs=pl.col("response_ids").list.eval(pl.element().cast(pl.Float32) * 0), advantage=pl.lit(0.0))
    data = load_rows(tokens, model_cfg.vocab_size, cfg.max_seq_len or model_cfg.max_position_embeddings,
                     check_logprobs=False)
    model = LogProbModel(load_causal_lm(policy_path, torch.float32), cfg.temperature).eval()
    return float(_logprobs(model, data, cfg, 0, 1)[0].double().mean())


def _empty_round(cfg: TrainerConfig, policy_path, out_dir, data: RoundData, rank: int) -> TrainResult:
    if cfg.empty_round == "error":
        raise BadRoundError(f"the round has no trainable rows ({data.dropped_empty} with empty responses); "
                            "set TrainerConfig.empty_round='skip' to export the unchanged policy instead")
    if rank == 0:
        import shutil

        verify_stage_dir(policy_path)  # its weights become the round's export
        shutil.copytree(policy_path, out_dir, dirs_exist_ok=True)
    return TrainResult(Path(out_dir), 0, 0, 0, data.dropped_empty, skipped="empty round")


def _inputs(mb: MicroBatch) -> tuple:
    """``LogProbModel.forward``'s tensor arguments of a micro-batch."""
    return mb.input_ids, mb.attention_mask, mb.position_ids, mb.resp_index, mb.response_ids, mb.mask


def _to(mb: MicroBatch, device) -> MicroBatch:
    return dataclasses.replace(mb, **{f.name: getattr(mb, f.name).to(device) for f in dataclasses.fields(mb)
                                      if isinstance(getattr(mb, f.name), torch.Tensor)})


def _device(model) -> torch.device:
    return getattr(model, "device", None) or next(model.parameters()).device


def _report(metrics: list[dict], rank: int) -> None:
    if rank != 0 or not metrics:
        return
    seconds = sum(m["step_time_s"] for m in metrics)
    tokens = sum(m["tokens"] for m in metrics)
    gpu = has_cuda()
    per, cores = ("GPU", 1) if gpu else (f"core ({torch.get_num_threads()} threads)", torch.get_num_threads())
    print(f"trainer: {len(metrics)} steps, {tokens / seconds:.0f} tokens/s, "
          f"{tokens / seconds / cores:.0f} tokens/s per {per}")
