#!/usr/bin/env bash
# Create (once) and update (when pyproject.toml changes) the checkout's .venv.
# Sourced by scripts/run.sh and scripts/test.sh; safe to run by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$(cat "$root/pyproject.toml" "$root/scripts/venv.sh" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
    echo "installing into $venv (first run takes a few minutes)" >&2
    "$venv/bin/pip" install -qq --upgrade pip
    # A CPU machine takes the CPU build of torch; a plain `torch` would pull a multi-GB CUDA build.
    "$venv/bin/pip" install -qq "torch==2.13.0"
    # compat: a plain path entry, so Dask's worker-dir spill folder "storage/" cannot shadow our package
    "$venv/bin/pip" install -qq -e "$root[train,embed,test]" --config-settings editable_mode=compat
    echo "$stamp" > "$venv/.installed"
fi
export PATH="$venv/bin:$PATH"
