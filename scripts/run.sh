#!/usr/bin/env bash
# The main job on the embedded default, in the checkout's .venv (created on first use).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
exec python pipeline/round.py --config configs/local.yaml "$@"
