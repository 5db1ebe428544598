#!/usr/bin/env bash
# Cold vs resident rounds on one CUDA GPU: `bench.rounds` with the rollout engine and the trainer on the GPU.
#
#   bash bench/gpu_rounds.sh            # from the repository root, on a machine with one CUDA GPU
#
# A random Qwen2.5-0.5B-shaped policy (24 layers, width 896; the project's small tokenizer, so ~0.36 B
# parameters), bf16, 4 rounds each way; first the HF backend, then vLLM when it imports (the gpu extra).
# Each prints the per-round table (wall, generate, env, update, overhead, policy load) and the line
# `overhead per round: cold X s, resident Y s (ratio R)`. Output also goes to ${OUT:-bench/out}/gpu_rounds.log.
# Needs the project's environment (environment.yml): torch (CUDA), transformers, deepspeed, dask, polars, alfworld.
# Sized for ~10 minutes on an H100.
set -euo pipefail
out="${OUT:-bench/out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
model=(tiny_model.hidden_size=896 tiny_model.intermediate_size=4864 tiny_model.num_hidden_layers=24
       tiny_model.num_attention_heads=14 tiny_model.num_key_value_heads=2)
gpu=(trainer.precision=bf16 rollout.policy.dtype=bfloat16)
{
  python -m bench.rounds --rounds 4 --out "$out/rounds_gpu_hf" "${model[@]}" "${gpu[@]}" rollout.policy.device=cuda
  if python -c "import vllm" 2>/dev/null; then
    python -m bench.rounds --rounds 4 --backend vllm --out "$out/rounds_gpu_vllm" "${model[@]}" "${gpu[@]}" \
      rollout.policy.gpu_memory_utilization=0.3 rollout.policy.free_between_rounds=sleep
  else
    echo "vllm does not import here: the vLLM comparison is skipped"
  fi
} 2>&1 | tee "$out/gpu_rounds.log"
