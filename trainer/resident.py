"""A trainer rank that stays up from round to round: ``python -m trainer --run RUN --round R ... --serve``.

It trains round R as the same command without ``--serve`` would, then reads one
request per stdin line (JSON: ``round``, ``policy``, ``ref``) and trains that
round likewise, with the settings of ``--config`` read again for each. Each
round is answered with one stdout line, ``trainer.protocol.ROUND_PREFIX`` and JSON, once its
checkpoint is committed. It ends at the end of its input; an error ends it with
the error's traceback.

Between rounds it keeps the DeepSpeed engine (weights, AdamW moments, step
counts) and the reference model in memory (``Resident``). The committed
checkpoint and the optimizer state on disk stay the source of truth: every round
still writes both, and the engine is carried into a round only when it holds
exactly what a fresh process would load for it. The round starts from the
checkpoint it exported and committed (the same manifest, checksums included),
with the same config and world size, and with ``optimizer_state: keep`` the
previous round's state on disk is the one it saved last. Otherwise the engine
is dropped and built from disk as a fresh process builds it.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Held:
    """An engine left by a finished round, and what a round must start from to continue with it."""

    engine: object
    lm: object
    cfg: object  # the TrainerConfig it trained with
    world: int
    state_dir: str  # where it saved its final state (``optimizer_state: keep``)
    tag: str  # that state's tag (the text of its ``latest`` file)
    manifest: object = None  # the manifest of the checkpoint it exported, once committed


class Resident:
    """What a resident rank keeps between rounds: the last round's engine and the reference models it loaded."""

    def __init__(self) -> None:
        self.held: Held | None = None
        self.ref: tuple[tuple[str, object], object] | None = None  # (path, dtype) and the model loaded from it

    def take(self, cfg, policy_manifest, world: int, optimizer_from) -> tuple[object, object] | None:
        """``(engine, lm)`` when the held engine is exactly what a fresh process would load for a round that starts
        from the checkpoint of ``policy_manifest`` with ``cfg``; else None. Either way nothing stays held."""
        held, self.held = self.held, None
        if held is None:
            return None
        latest = Path(held.state_dir, "latest")
        if held.manifest is not None and held.manifest == policy_manifest and held.cfg == cfg \
                and held.world == world and str(optimizer_from) == held.state_dir and latest.is_file() \
                and latest.read_text().strip() == held.tag:
            return held.engine, held.lm
        del held
        gc.collect()  # a DeepSpeed engine is held in reference cycles: free it before the next one is built
        return None

    def hold(self, engine, lm, cfg, world: int, state_dir) -> None:
        """Keep the engine of a finished round whose final state is saved in ``state_dir``."""
        self.held = Held(engine, lm, cfg, world, str(state_dir), Path(state_dir, "latest").read_text().strip())

    def committed(self, manifest) -> None:
        """The held engine's export is committed under ``manifest``."""
        if self.held is not None:
            self.held.manifest = manifest

    def reference(self, path, dtype):
        """The reference model at ``path`` (loaded once, kept on the CPU)."""
        from trainer.model import load_causal_lm

        key = (str(path), dtype)
        if self.ref is None or self.ref[0] != key:
            self.ref = None
            self.ref = key, load_causal_lm(path, dtype)
        return self.ref[1]


def release_cached_memory() -> None:
    """Give the GPU memory torch's allocator caches (a round's activations) back between rounds: a rollout engine
    on the same GPU needs it. The engine's own tensors stay."""
    from trainer.host import has_cuda

    if has_cuda():
        import torch

        torch.cuda.empty_cache()
