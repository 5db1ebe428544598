"""Per-update metrics: loss parts, clip fractions, approx KL, entropy, grad norm, tokens/s, padding share, MFU.

Micro-batch statistics are sums (loss shares, token counts) kept as device tensors,
added up over the accumulation steps, and copied to the host and all-reduced over
ranks once per optimizer step (one sync per step, none per micro-batch).

>>> import torch
>>> acc = StepAccumulator()
>>> acc.add({"loss": torch.tensor(0.25), "clipped": torch.tensor(1.0), "response_tokens": torch.tensor(4.0)},
...         tokens=10, processed=12, flops=0.0)
>>> acc.add({"loss": torch.tensor(0.5), "clipped": torch.tensor(0.0), "response_tokens": torch.tensor(4.0)},
...         tokens=6, processed=8, flops=0.0)
>>> m = acc.finish(seconds=2.0, grad_norm=1.5, lr=1e-6, peak_flops=None)
>>> m["loss"], m["clip_frac"], m["tokens_per_s"], m["padding_share"]
(0.75, 0.125, 8.0, 0.2)
"""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import torch

from trainer.host import has_cuda
from trainer.protocol import LIVE_PREFIX

# bf16 dense peak FLOP/s per device, matched on the CUDA device name.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}
_VALUE = ("vf_loss", "vf_clipped", "value_rows", "value_ret_sum", "value_ret_sq", "value_err_sum", "value_err_sq")
_TENSORS = ("loss", "pg_loss", "kl_loss", "entropy", "clipped", "clipped_lower", "approx_kl_sum",
            "response_tokens") + _VALUE  # the _VALUE sums: a critic's (trainer.critic.value_loss)
_SUMMED = _TENSORS + ("tokens", "processed", "flops")


def live_record(step: int, total: int, metrics: dict) -> str:
    """The stdout line ``python -m trainer --live`` prints after each optimizer step (rank 0).

    >>> live_record(2, 5, {"loss": 0.5})
    'gigpo-step {"step": 2, "total": 5, "loss": 0.5}'
    """
    return LIVE_PREFIX + json.dumps({"step": step, "total": total, **metrics})


def peak_flops(configured: float | None) -> float | None:
    """The configured peak, else the table's entry for this GPU, else None (CPU: no MFU)."""
    if configured is not None:
        return configured
    if not has_cuda():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def train_flops(matmul_params: int, seq_lens: np.ndarray, n_layers: int, attn_dim: int) -> float:
    """Forward+backward FLOPs of one micro-batch: 6*N per token + causal attention 6*L*d*len^2."""
    lens = seq_lens.astype(np.float64)
    return 6.0 * matmul_params * lens.sum() + 6.0 * n_layers * attn_dim * float((lens**2).sum())


class StepAccumulator:
    """Sums micro-batch statistics of one optimizer step, then reduces them over ranks."""

    def __init__(self) -> None:
        self.stats: dict[str, torch.Tensor] = {}
        self.host: dict[str, float] = defaultdict(float)

    def add(self, stats: dict[str, torch.Tensor], tokens: int, processed: int, flops: float) -> None:
        """Add a micro-batch: its statistics, real tokens, FLOPs and the tokens it processed, padding included."""
        for key in _TENSORS:
            value = stats[key].double() if key in stats else 0.0
            self.stats[key] = self.stats[key] + value if key in self.stats else value
        self.host["tokens"] += tokens
        self.host["processed"] += processed
        self.host["flops"] += flops

    def loss(self) -> float:
        """The step's loss so far (one host sync)."""
        return float(self.stats["loss"])

    def finish(self, seconds: float, grad_norm: float, lr: float, peak_flops: float | None,
               world_size: int = 1) -> dict[str, float]:
        """All-reduce the sums (when a process group exists) and derive the step's metrics."""
        device = next(v.device for v in self.stats.values() if isinstance(v, torch.Tensor))
        local = torch.stack([torch.as_tensor(self.stats.get(k, 0.0), dtype=torch.float64, device=device)
                             for k in _TENSORS]).cpu().tolist() + [self.host[k] for k in _SUMMED[len(_TENSORS):]]
        s = dict(zip(_SUMMED, _all_reduce(local)))
        ntok = max(s["response_tokens"], 1.0)
        out = {k: s[k] for k in ("loss", "pg_loss", "kl_loss", "entropy")}
        out.update(
            clip_frac=s["clipped"] / ntok,
            clip_frac_lower=s["clipped_lower"] / ntok,
            approx_kl=s["approx_kl_sum"] / ntok,
            grad_norm=grad_norm,
            lr=lr,
            tokens=s["tokens"],
            padding_share=(s["processed"] - s["tokens"]) / s["processed"] if s["processed"] else 0.0,  # padded share
            response_tokens=s["response_tokens"],
            step_time_s=seconds,
            tokens_per_s=s["tokens"] / seconds if seconds > 0 else float("nan"),
        )
        if peak_flops:
            out["mfu"] = s["flops"] / seconds / (peak_flops * world_size)
        if s["value_rows"]:
            out.update(_value_metrics(s))
        return out


def _value_metrics(s: dict[str, float]) -> dict[str, float]:
    """The critic's value loss, value clip fraction and explained variance ``1 - Var(R - V) / Var(R)``.

    >>> _value_metrics({"vf_loss": 0.5, "vf_clipped": 1.0, "value_rows": 4.0, "value_ret_sum": 4.0,
    ...                 "value_ret_sq": 8.0, "value_err_sum": 0.0, "value_err_sq": 1.0})
    {'vf_loss': 0.5, 'vf_clip_frac': 0.25, 'explained_var': 0.75}
    """
    n = s["value_rows"]
    var_ret = s["value_ret_sq"] / n - (s["value_ret_sum"] / n) ** 2
    var_err = s["value_err_sq"] / n - (s["value_err_sum"] / n) ** 2
    return {"vf_loss": s["vf_loss"], "vf_clip_frac": s["vf_clipped"] / n,
            "explained_var": 1.0 - var_err / var_ret if var_ret > 0 else float("nan")}


def _all_reduce(values: list[float]) -> list[float]:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()
