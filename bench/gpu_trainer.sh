#!/usr/bin/env bash
# Trainer before/after issue 14 on one GPU (prepared for the device machine; not yet run: no GPU was lent).
#
#   bash bench/gpu_trainer.sh            # from the repository root, on a machine with one CUDA GPU
#
# Random-init Qwen2.5-1.5B shape, bf16, ZeRO-2, 1,024 rows of ~768 prompt + ~128 response tokens,
# mini-batch 128, micro-batch 16: first the settings before issue 14 (padded micro-batches, one full
# LM-head pass, log-prob micro-batch 16), then the defaults now (packed, 512-token logit chunks,
# log-prob micro-batch 32), then micro-batch 32 packed (did not fit before: out of memory at 140 GiB).
# Each prints update-step tokens/s, MFU, padding share, the round's phases, the share of the round in
# update steps and peak GPU memory. Output also goes to ${OUT:-bench/out}/gpu_trainer.log.
# Needs torch (CUDA), transformers, deepspeed, polars; flash-attn is used for packed sequences when
# installed, else SDPA with a block-diagonal mask (the device machine of these sessions lacks deepspeed and
# polars: bring them as wheels). Sized for ~10 minutes on an H200.
set -euo pipefail
out="${OUT:-bench/out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
common=(--preset qwen1.5b --rows 1024 --prompt-len 768 --response-len 128 --mini-batch 128 --zero-stage 2)
{
  python -m bench.trainer "${common[@]}" --micro-batch 16 --settings before after
  python -m bench.trainer "${common[@]}" --micro-batch 32 --settings after
} 2>&1 | tee "$out/gpu_trainer.log"
