#!/usr/bin/env bash
# The test suite, in the checkout's .venv (created on first use).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
exec python -m pytest -q "$@"
