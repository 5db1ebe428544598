"""The trainer's one config dataclass (PPO or SFT loss, optimizer, batching, DeepSpeed).

Defaults follow verl-agent's ALFWorld GiGPO recipe where it sets a value.

>>> cfg = TrainerConfig(mini_batch_size=8, micro_batch_size=2)
>>> cfg.grad_accum_steps(world_size=2)
2
>>> TrainerConfig(loss_agg_mode="mean")  # doctest: +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
ValueError: TrainerConfig.loss_agg_mode='mean': expected one of ['seq-mean-token-mean', 'seq-mean-token-sum',
'token-mean']
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.validators import expect

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
KL_LOSS_TYPES = ("low_var_kl", "kl", "abs", "mse")
OLD_LOGPROBS = ("rollout", "recompute")
PRECISIONS = ("auto", "fp32", "bf16")
EMPTY_ROUND = ("error", "skip")
LOSSES = ("ppo", "sft")
OPTIMIZER_STATES = ("keep", "reset")
REFERENCES = ("start", "base", "none")
LR_DECAYS = ("none", "linear")


@dataclass(frozen=True)
class CriticConfig:
    """PPO with a critic: a value head on the policy, GAE over each episode's steps (``trainer/critic.py``, ``gae.py``).

    The value head is a linear layer on the policy's last hidden state at a step's last
    prompt token, trained with the policy (one backbone, one AdamW) on ``loss + vf_coef *
    value loss``; its weights travel with the checkpoint (``value_head.pt``). The rows'
    ``advantage`` is then the step's reward (the ``ppo`` estimator).
    """

    gamma: float = 1.0  # GAE discount across an episode's steps (verl's default, kept by verl-agent's PPO baseline)
    lam: float = 1.0  # GAE lambda (verl's default, kept by verl-agent's PPO baseline; 1: Monte-Carlo return - V)
    vf_coef: float = 0.1  # weight of the value loss in the shared loss (small: win rewards of 10 give large errors)
    cliprange_value: float = 0.5  # value clip: V_new kept within V_old +- this (verl's critic.cliprange_value)
    whiten: bool = True  # normalise the round's GAE advantages to mean 0, std 1 over its steps (verl whitens)

    def __post_init__(self) -> None:
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CriticConfig.{name}={getattr(self, name)!r}: expected a value in [0, 1]")
        for name in ("vf_coef", "cliprange_value"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CriticConfig.{name}={getattr(self, name)!r}: expected > 0")


@dataclass(frozen=True)
class TrainerConfig:
    """Hyper-parameters of one round of PPO updates over advantage-annotated steps (or of SFT on steps)."""

    # --- policy loss ---
    clip_ratio_low: float = 0.2  # ratio lower clip: 1 - clip_ratio_low
    clip_ratio_high: float = 0.2  # ratio upper clip: 1 + clip_ratio_high (0.28 = DAPO clip-higher)
    clip_ratio_c: float = 3.0  # dual-clip bound on -A*ratio for negative advantages (must be > 1)
    loss_agg_mode: str = "token-mean"  # token-mean | seq-mean-token-sum | seq-mean-token-mean, over the mini-batch
    kl_coef: float = 0.01  # weight of the KL-to-reference loss (0 disables it and the reference model)
    reference: str = "start"  # KL reference: start (round 0's policy: warm start, fork or base) | base | none
    kl_loss_type: str = "low_var_kl"  # low_var_kl (k3, clamped to [-10, 10]) | kl (k1) | abs | mse (k2)
    entropy_coeff: float = 0.0  # entropy bonus: loss -= entropy_coeff * aggregated entropy
    temperature: float = 1.0  # = rollout.sampling.temperature; logits are divided by it (as verl does)
    old_logprobs: str = "recompute"  # rollout: use the shards' log-probs | recompute: policy forward before updating
    loss: str = "ppo"  # ppo: clipped policy gradient on advantages | sft: NLL of response tokens, no advantages
    # PPO with a value head and GAE (null: the rows' advantages as they are); advantage.estimator=ppo sets it.
    # Used with loss ppo only (an SFT stage ignores it)
    critic: CriticConfig | None = None
    # --- optimizer ---
    lr: float = 1e-6  # AdamW learning rate after warmup
    warmup_steps: int = 0  # linear warmup: lr * min(1, (k + 1) / warmup_steps) at optimizer step k
    lr_decay: str = "none"  # none | linear: after warmup, down to 0 at the last optimizer step of a training call
    weight_decay: float = 0.01  # AdamW decoupled weight decay, applied to every parameter
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    grad_clip: float = 1.0  # global gradient-norm clip (0 disables)
    optimizer_state: str = "keep"  # keep: AdamW moments and step counts carry over from round to round | reset
    # --- batching ---
    ppo_epochs: int = 1  # passes over the round's rows
    mini_batch_size: int = 256  # rows per optimizer step, all ranks together
    micro_batch_size: int = 8  # rows per forward/backward on one rank
    logprob_micro_batch_size: int = 32  # rows per no-grad forward (old/ref log-probs) on one rank
    packing: bool = True  # pack a micro-batch's sequences back to back, no padding (False: right-padded)
    logit_chunk_tokens: int = 512  # response tokens per LM-head chunk: fp32 logits of one chunk at most (0: all)
    max_seq_len: int | None = None  # longest prompt+response accepted; None: the model's max_position_embeddings
    shuffle: bool = True  # shuffle rows each epoch (seeded) before cutting mini-batches
    seed: int = 0  # seed of the row shuffle
    empty_round: str = "error"  # a round with no rows: error | skip (export the unchanged policy)
    # --- engine ---
    zero_stage: int = 0  # DeepSpeed ZeRO stage 0-3
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    gradient_checkpointing: bool = False  # recompute activations in backward (large models)
    save_every: int = 4  # save DeepSpeed state every N optimizer steps for resume (0: never)
    keep_state: bool = False  # keep the DeepSpeed state after the round's checkpoint is exported
    keep_checkpoints: int = 0  # retention: keep the newest N rounds' checkpoints (and states); 0 keeps all
    keep_every: int = 0  # retention: also keep every checkpoint whose policy version is a multiple of M; 0: none
    peak_flops: float | None = None  # per-device peak FLOP/s for MFU; None: looked up from the GPU name
    num_threads: int = 0  # torch CPU threads per rank; 0: the host's cores (as the process may use) / its ranks
    resident: bool = True  # in a run, each rank's process and engine stay up from round to round (false: one per round)

    def __post_init__(self) -> None:
        for name, choices in (("loss_agg_mode", LOSS_AGG_MODES), ("kl_loss_type", KL_LOSS_TYPES),
                              ("old_logprobs", OLD_LOGPROBS), ("precision", PRECISIONS), ("empty_round", EMPTY_ROUND),
                              ("loss", LOSSES), ("optimizer_state", OPTIMIZER_STATES), ("reference", REFERENCES),
                              ("lr_decay", LR_DECAYS)):
            expect(self, name, getattr(self, name) in choices, f"expected one of {sorted(choices)}")
        expect(self, "reference", self.reference != "none" or self.kl_coef == 0,
               f"'none' (no KL reference) needs kl_coef=0, got kl_coef={self.kl_coef}")
        for name in ("clip_ratio_low", "clip_ratio_high"):
            expect(self, name, 0 <= getattr(self, name) < 1, "expected 0 <= value < 1")
        expect(self, "clip_ratio_c", self.clip_ratio_c > 1.0, "expected > 1 (dual-clip lower bound)")
        for name in ("kl_coef", "entropy_coeff", "weight_decay", "grad_clip", "lr"):
            expect(self, name, getattr(self, name) >= 0, "expected >= 0")
        expect(self, "temperature", self.temperature > 0, "expected > 0")
        for name in ("ppo_epochs", "mini_batch_size", "micro_batch_size", "logprob_micro_batch_size"):
            expect(self, name, getattr(self, name) >= 1, "expected >= 1")
        expect(self, "kl_coef", self.loss == "ppo" or self.kl_coef == 0,
               "expected 0 with loss='sft' (no reference policy)")
        for name in ("warmup_steps", "save_every", "num_threads", "logit_chunk_tokens", "keep_checkpoints",
                     "keep_every"):
            expect(self, name, getattr(self, name) >= 0, "expected >= 0")
        expect(self, "max_seq_len", self.max_seq_len is None or self.max_seq_len >= 2, "expected None or >= 2")
        expect(self, "zero_stage", self.zero_stage in (0, 1, 2, 3), "expected 0, 1, 2 or 3")
        expect(self, "betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
               "expected two values in [0, 1)")
        expect(self, "peak_flops", self.peak_flops is None or self.peak_flops > 0, "expected None or > 0")
        expect(self, "mini_batch_size", self.mini_batch_size % self.micro_batch_size == 0,
               f"expected a multiple of micro_batch_size={self.micro_batch_size}")

    @property
    def uses_critic(self) -> bool:
        """Whether training runs the value head and GAE (a critic section with the ppo loss)."""
        return self.critic is not None and self.loss == "ppo"

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each rank (DeepSpeed's gradient_accumulation_steps)."""
        per_step = self.micro_batch_size * world_size
        if self.mini_batch_size % per_step:
            raise ValueError(
                f"TrainerConfig.mini_batch_size={self.mini_batch_size}: expected a multiple of "
                f"micro_batch_size * world_size = {self.micro_batch_size} * {world_size}"
            )
        return self.mini_batch_size // per_step
