#!/usr/bin/env bash
# The trainer on one GPU: padded baseline vs the defaults, then a larger packed micro-batch.
#
#   bash bench/gpu_trainer.sh            # from the repository root, on a machine with one CUDA GPU
#
# Random-init Qwen2.5-1.5B shape, bf16, ZeRO-2, 1,024 rows of ~768 prompt + ~128 response tokens,
# mini-batch 128, micro-batch 16: first the padded baseline (`--settings before`: padded micro-batches,
# one full LM-head pass, log-prob micro-batch 16), then the defaults (`after`: packed, 512-token logit
# chunks, log-prob micro-batch 32), then micro-batch 32 packed (padded, 32 rows do not fit 140 GiB).
# Each prints update-step tokens/s, MFU, padding share, the round's phases, the share of the round in
# update steps and peak GPU memory. Output also goes to ${OUT:-bench/out}/gpu_trainer.log.
# Needs torch (CUDA), transformers, deepspeed, polars; flash-attn is used for packed sequences when
# installed, else SDPA per packed sequence (trainer/attention.py). Sized for ~10 minutes on an H200.
set -euo pipefail
out="${OUT:-bench/out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
common=(--preset qwen1.5b --rows 1024 --prompt-len 768 --response-len 128 --mini-batch 128 --zero-stage 2)
{
  python -m bench.trainer "${common[@]}" --micro-batch 16 --settings before after
  python -m bench.trainer "${common[@]}" --micro-batch 32 --settings after
} 2>&1 | tee "$out/gpu_trainer.log"
