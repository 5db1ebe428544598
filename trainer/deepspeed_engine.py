"""DeepSpeed engine setup: process group, ZeRO config, precision, AdamW, lr schedule.

On a machine without CUDA (or with ``DS_ACCELERATOR=cpu``), DeepSpeed runs on its
CPU accelerator over gloo (``DS_ACCELERATOR=cpu``, set here before DeepSpeed is imported) with a plain
``torch.optim.AdamW`` (no Adam op to compile). Precision: bf16 on GPU, fp32 on CPU.

>>> from trainer.config import TrainerConfig
>>> ds = ds_config(TrainerConfig(mini_batch_size=8, micro_batch_size=2, zero_stage=2), world_size=2, bf16=False)
>>> ds["train_batch_size"], ds["gradient_accumulation_steps"], ds["zero_optimization"]["stage"]
(8, 2, 2)
>>> lr_at(TrainerConfig(lr=1.0, warmup_steps=4), 1, total=10)
0.5
>>> [lr_at(TrainerConfig(lr=1.0, lr_decay="linear"), k, total=4) for k in range(4)]
[1.0, 0.75, 0.5, 0.25]
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from trainer.config import TrainerConfig
from trainer.critic import CriticModel, load_value_head
from trainer.host import free_port, has_cuda
from trainer.model import LogProbModel, load_causal_lm


def extensions_dir(prefix: str = sys.prefix) -> str:
    """Where this Python environment (``prefix``) builds torch extensions: a folder of its own in the user's cache.

    torch's default (``~/.cache/torch_extensions``) is shared by every environment of the user: two
    checkouts with different venvs rebuild DeepSpeed's CPU comm op in turn, each waiting on the other's lock.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(os.path.realpath(prefix).encode()).hexdigest()[:12]
    return os.path.join(cache, "torch_extensions", f"venv-{key}")


def import_deepspeed():
    """Import DeepSpeed, selecting its CPU accelerator first when there is no GPU.

    Its ops build under ``TORCH_EXTENSIONS_DIR``, by default ``extensions_dir()``, with this environment's ninja.
    """
    if not has_cuda():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", extensions_dir())
    _environment_scripts_first_on_path()
    import deepspeed

    return deepspeed


def _environment_scripts_first_on_path() -> None:
    """Put this Python environment's scripts folder (the ninja installed with DeepSpeed) first on ``PATH``.

    A process started as ``.venv/bin/python`` without the venv activated would find a system ninja first. Two
    ninja versions write build logs of different versions, and each takes the other's log for a stale build:
    the op is compiled again from scratch (about a minute) whenever they alternate.
    """
    scripts = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if scripts and path.split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = os.pathsep.join(filter(None, [scripts, path]))


def init_distributed(rank: int | None = None, world_size: int | None = None, master_addr: str | None = None,
                     master_port: int | None = None, local_rank: int = 0,
                     on_note: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Join (or create) the torch.distributed group; returns ``(rank, world_size)``.

    Arguments left ``None`` come from the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``, as the ``deepspeed`` launcher sets them);
    with none set this is a 1-rank group on 127.0.0.1. Backend: nccl on GPU, gloo on CPU. ``on_note`` hears of a
    build of DeepSpeed's CPU comm op before it starts (``load_shm_comm_op``).
    """
    import torch.distributed as dist

    env = {"RANK": rank, "WORLD_SIZE": world_size, "MASTER_ADDR": master_addr, "MASTER_PORT": master_port}
    defaults = {"RANK": 0, "WORLD_SIZE": 1, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": _default_port}
    for key, value in env.items():
        if value is not None:
            os.environ[key] = str(value)
        elif key not in os.environ:
            default = defaults[key]
            os.environ[key] = str(default() if callable(default) else default)
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
    deepspeed = import_deepspeed()
    if not has_cuda():
        load_shm_comm_op(deepspeed, on_note)
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if has_cuda() else "gloo", auto_mpi_discovery=False)
    if has_cuda():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return dist.get_rank(), dist.get_world_size()


def _default_port() -> int:
    """A 1-rank group's store binds any free port as it starts (0: nothing to race for); several ranks need one
    agreed port."""
    return 0 if os.environ.get("WORLD_SIZE", "1") == "1" else free_port()


def shutdown_distributed() -> None:
    """Barrier, then destroy the default process group (what the deepspeed launcher expects).

    Goes through ``deepspeed.comm`` so DeepSpeed also drops its cached groups and
    the same process can join a new group later.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        import_deepspeed().comm.destroy_process_group()


def load_shm_comm_op(deepspeed, on_note: Callable[[str], None] | None = None) -> None:
    """Build (or load) DeepSpeed's CPU shared-memory comm op, one process of the host at a time.

    The first build in a Python environment compiles C++ for about a minute (``python -m trainer.build_ops``
    does it at install); ``on_note`` is told before that build, or the wait for another process's build, starts.

    torch's JIT build guards a build folder with a ``lock`` file; a build killed
    midway leaves it behind, and every later trainer then waits on it forever.
    Here builds run under an flock beside that folder, so a ``lock`` file seen
    while holding it is stale and is removed. ``init_distributed`` then reuses
    the loaded op (DeepSpeed keeps it per process).
    """
    from deepspeed.accelerator import get_accelerator
    from torch.utils.cpp_extension import _get_build_directory

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return
    folder = _get_build_directory(builder.NAME, verbose=False)
    if on_note is not None and not os.path.exists(os.path.join(folder, f"{builder.NAME}.so")):
        on_note(f"building DeepSpeed's CPU comm op in {folder} (once per Python environment, about a minute) ...")
    with open(f"{folder}.flock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, "lock"))
        builder.load(verbose=False)


def use_bf16(cfg: TrainerConfig) -> bool:
    if cfg.precision == "auto":
        return has_cuda()
    return cfg.precision == "bf16"


def ds_config(cfg: TrainerConfig, world_size: int, bf16: bool) -> dict:
    """The DeepSpeed JSON config for ``cfg`` on ``world_size`` ranks."""
    gas = cfg.grad_accum_steps(world_size)
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # export gathers itself (fp32 on CPU)
    return {
        "train_batch_size": cfg.micro_batch_size * gas * world_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,  # a plain torch AdamW: nothing to compile
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_engine(cfg: TrainerConfig, policy_path: str | Path, world_size: int):
    """Load the policy (with ``cfg.uses_critic``, its value head) and wrap it in a DeepSpeed engine; returns
    ``(engine, hf_model)``."""
    deepspeed = import_deepspeed()
    bf16 = use_bf16(cfg)
    lm = load_causal_lm(policy_path, torch.float32, cfg.gradient_checkpointing)
    module = (CriticModel if cfg.uses_critic else LogProbModel)(lm, cfg.temperature, cfg.logit_chunk_tokens)
    if cfg.uses_critic:
        load_value_head(module, policy_path)

    def optimizer(params):
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    engine, *_ = deepspeed.initialize(model=module, model_parameters=module.parameters(), optimizer=optimizer,
                                      config=ds_config(cfg, world_size, bf16))
    if world_size == 1 and cfg.zero_stage == 0:
        # An all-reduce over one rank copies every gradient out and back (6% of a small model's SFT step).
        engine.enable_backward_allreduce = False
    return engine, lm


def lr_at(cfg: TrainerConfig, step: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``: linear warmup, then constant or
    (``lr_decay: linear``) falling linearly towards 0 after the last step."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_decay == "linear" and step >= cfg.warmup_steps:
        return cfg.lr * (total - step) / max(total - cfg.warmup_steps, 1)
    return cfg.lr * warm


def set_lr(engine, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def global_grad_norm(engine) -> float:
    """Pre-clip gradient norm of the step about to be taken (call after the boundary backward).

    ZeRO optimizers compute it in ``step()``; for stage 0 fp32 it is computed here from
    the already all-reduced gradients.
    """
    params = [p for p in engine.module.parameters() if p.grad is not None]
    if engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled() or not params:
        return float("nan")
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
