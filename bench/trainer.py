"""Trainer benchmark: tokens/s of PPO update steps through the real DeepSpeed engine.

    python -m bench.trainer                       # CPU: tiny and small presets
    python -m bench.trainer --preset qwen0.5b     # GPU: random-init Qwen2.5-0.5B shape, bf16, MFU
    python -m bench.trainer --settings before after   # padded baseline vs the defaults, on the same rows

Builds a random-init Qwen2 model of the preset's shape, synthetic advantage rows
(``--prompt-len`` / ``--response-len`` tokens), and runs ``train_round`` (1 rank,
old log-probs recomputed, KL to a reference = the same model unless
``--kl-coef 0``). Prints the update steps' tokens/s (median over steps after the
first), their padding share, tokens/s per core on CPU, the model FLOP/s achieved
and, as the physical limit, its ratio to this machine's measured fp32 matmul
FLOP/s (CPU) or MFU against the bf16 peak (GPU); then the whole round's rate,
its phases (load, engine, old/ref log-probs, update, export) and the share of
the round spent in update steps. ``--settings`` picks the trainer settings, each
run in turn on the same rows: ``before`` is the padded baseline (right-padded
micro-batches, one full LM-head pass, log-prob micro-batch = micro-batch),
``after`` the defaults (packed, chunked logits).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=1024),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=8192),
    "qwen0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                     num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def make_model(preset: str, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    shape = {"tie_word_embeddings": False, "max_position_embeddings": 32768, **PRESETS[preset]}
    AutoModelForCausalLM.from_config(Qwen2Config(**shape), dtype=torch.float32).save_pretrained(out)
    return out


def make_rows(n: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.integers(prompt_len // 2, prompt_len * 3 // 2 + 1, n)
    r = rng.integers(max(1, response_len // 2), response_len * 3 // 2 + 1, n)
    return pl.DataFrame({
        "prompt_ids": [rng.integers(0, vocab, k).tolist() for k in p],
        "response_ids": [rng.integers(0, vocab, k).tolist() for k in r],
        "response_logprobs": [(-rng.random(k)).tolist() for k in r],
        "advantage": rng.normal(size=n),
    })


def matmul_flops(seconds: float = 1.0, n: int = 1024) -> float:
    """Measured fp32 matmul FLOP/s of this CPU (all torch threads): the CPU's practical ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start)


SETTINGS = {  # --settings: the padded baseline (before) and the defaults (after), on the same rows in one run
    "before": lambda micro: dict(packing=False, logit_chunk_tokens=0, logprob_micro_batch_size=micro),
    "after": lambda micro: dict(packing=True, logprob_micro_batch_size=max(32, 2 * micro)),
}


def bench(preset: str, args, label: str) -> None:
    from trainer import TrainerConfig, train_round
    from trainer.host import has_cuda

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-trainer-{preset}-"))
    model_dir = make_model(preset, tmp / "model")
    rows = make_rows(args.rows, args.prompt_len, args.response_len, PRESETS[preset]["vocab_size"])
    cfg = TrainerConfig(lr=1e-6, kl_coef=args.kl_coef, mini_batch_size=args.mini_batch,
                        micro_batch_size=args.micro_batch, zero_stage=args.zero_stage,
                        gradient_checkpointing=args.grad_ckpt, save_every=0, max_seq_len=32768,
                        **SETTINGS[label](args.micro_batch))
    if has_cuda():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    res = train_round(cfg, model_dir, rows, tmp / "out", ref_path=model_dir if cfg.kl_coef > 0 else None)
    wall = time.perf_counter() - start
    print(f"\n[{preset} {label}] {res.rows} rows x ~{args.prompt_len}+{args.response_len} "
          f"tokens, {res.steps} steps (mini {cfg.mini_batch_size}, micro {cfg.micro_batch_size}, log-prob micro "
          f"{cfg.logprob_micro_batch_size}, ZeRO {cfg.zero_stage}, packing {cfg.packing}, logit chunk "
          f"{cfg.logit_chunk_tokens}, kl_coef {cfg.kl_coef}), device {'cuda' if has_cuda() else 'cpu'}")
    report(res, rows, model_dir, wall, cfg.ppo_epochs)


def report(res, rows: pl.DataFrame, model_dir: Path, wall: float, epochs: int) -> None:
    """Update-step rate, padding, the round's phases and the share of the round spent in update steps."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.host import has_cuda
    from trainer.model import count_params
    from trainer.step_metrics import train_flops

    steady = res.metrics[1:] or res.metrics
    tok_s = statistics.median(m["tokens_per_s"] for m in steady)
    c = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        n_all, n_mm = count_params(AutoModelForCausalLM.from_config(c))
    lens = (rows["prompt_ids"].list.len() + rows["response_ids"].list.len()).to_numpy()
    flops_per_token = train_flops(n_mm, lens, c.num_hidden_layers, c.hidden_size) / lens.sum()
    update = sum(m["step_time_s"] for m in res.metrics)
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
    print(f"  {n_all / 1e6:.1f} M params; update steps: {tok_s:,.0f} tokens/s (median), "
          f"{tok_s * flops_per_token / 1e9:,.1f} GFLOP/s ({flops_per_token / 1e6:.1f} MFLOP/token fwd+bwd), "
          f"padding share {statistics.mean(m['padding_share'] for m in res.metrics):.1%}")
    print(f"  whole round: {int(lens.sum()) * epochs / wall:,.0f} tokens/s ({wall:.1f} s: {phases}); "
          f"update steps {update / wall:.1%} of the round")
    if has_cuda():
        mfu = [m["mfu"] for m in steady if "mfu" in m]
        print(f"  MFU {statistics.median(mfu):.1%} (bf16 peak of {torch.cuda.get_device_name()})" if mfu
              else "  MFU: unknown GPU peak; pass TrainerConfig.peak_flops")
        print(f"  peak GPU memory allocated {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    else:
        threads = torch.get_num_threads()
        peak = matmul_flops()
        print(f"  {tok_s / threads:,.0f} tokens/s per core ({threads} threads); "
              f"{tok_s * flops_per_token / peak:.1%} of this CPU's measured fp32 matmul rate "
              f"({peak / 1e9:,.1f} GFLOP/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=sorted(PRESETS),
                    help="model shape (repeatable); default: tiny and small on CPU, qwen0.5b on GPU")
    ap.add_argument("--rows", type=int, default=None, help="rows in the round (default: 64 CPU, 512 GPU)")
    ap.add_argument("--prompt-len", type=int, default=256, help="mean prompt tokens")
    ap.add_argument("--response-len", type=int, default=32, help="mean response tokens")
    ap.add_argument("--mini-batch", type=int, default=None, help="rows per optimizer step (default 16 CPU, 128 GPU)")
    ap.add_argument("--micro-batch", type=int, default=None, help="rows per forward (default 8 CPU, 16 GPU)")
    ap.add_argument("--zero-stage", type=int, default=None, help="default 0 on CPU, 2 on GPU")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    ap.add_argument("--kl-coef", type=float, default=0.01, help="KL loss weight (0: no reference pass)")
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["after"],
                    help="trainer settings, each run in turn: before (the padded baseline: one full LM-head pass, "
                         "log-prob micro-batch = micro-batch) and/or after (the defaults: packed, chunked)")
    args = ap.parse_args()
    from trainer.host import has_cuda

    gpu = has_cuda()
    args.rows = args.rows or (512 if gpu else 64)
    args.mini_batch = args.mini_batch or (128 if gpu else 16)
    args.micro_batch = args.micro_batch or (16 if gpu else 8)
    args.zero_stage = args.zero_stage if args.zero_stage is not None else (2 if gpu else 0)
    for preset in args.preset or (["qwen0.5b"] if gpu else ["tiny", "small"]):
        for label in args.settings:
            bench(preset, args, label)


if __name__ == "__main__":
    main()
