"""Read what the experiment trackers wrote: TensorBoard scalars by run folder, W&B offline history records."""
from __future__ import annotations

import glob
import json
import struct
import time

STEP_KEYS = ["entropy", "grad_norm", "loss", "lr", "padding_share", "response_length", "response_tokens",
             "step_time_s", "tokens", "tokens_per_s"]  # the trainer's per-step figures of every loss (CPU: no mfu)
PPO_KEYS = ["approx_kl", "clip_frac", "clip_frac_lower", "kl_loss", "pg_loss"]  # zero by construction in SFT


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point of ``tag`` in TensorBoard run ``folder`` (what TensorBoard shows)."""
    return [(e.step, round(e.value, 6)) for e in _events(folder).Scalars(tag)]


def tags(folder) -> list[str]:
    """The scalar tags of TensorBoard run ``folder``."""
    return sorted(_events(folder).Tags()["scalars"])


def steps_by_tag(folder) -> dict[str, list[int]]:
    """Every scalar tag of TensorBoard run ``folder`` with the steps of its points, in order."""
    events = _events(folder)
    return {tag: [e.step for e in events.Scalars(tag)] for tag in sorted(events.Tags()["scalars"])}


def wandb_history(path: str) -> list[dict]:
    """The history records of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, buf, out = open(path, "rb").read(), 7, b"", []  # 7: the ':W&B' file header
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4:pos + 7])
        buf, pos = buf + raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            rec, buf = pb.Record.FromString(buf), b""
            if rec.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                out.append({k: v for k, v in items.items() if not k.startswith("_")} | {"_step": rec.history.step.num})
    return out


def wandb_points(folder) -> list[tuple[str, int]]:
    """(step metric, step) of every history record in the offline W&B runs under ``folder``, in order."""
    points = []
    for path in sorted(glob.glob(str(folder / "offline-run-*/run-*.wandb"))):
        deadline = time.monotonic() + 60
        while not (history := wandb_history(path)) and time.monotonic() < deadline:
            time.sleep(0.5)  # W&B's own process may still be writing the file
        points += [(key, h[key]) for h in history for key in ("sft/step", "train/step", "round") if key in h]
    return points
