"""Live trainer steps: the rank's output is copied to its log, and step records and notes are passed on."""
from __future__ import annotations

import io

from pipeline.runtime.live import forward, step_line
from trainer.protocol import NOTE_PREFIX
from trainer.step_metrics import live_record

STEP = {"loss": 0.012345, "approx_kl": 2e-05, "entropy": 1.5, "grad_norm": 0.25, "clip_frac": 0.125,
        "response_length": 12.25, "tokens_per_s": 1234.5}


def test_forward_copies_every_line_and_emits_step_records_and_notes():
    out = (NOTE_PREFIX + "rank 0: imports done in 2.5 s\n" + live_record(1, 2, STEP) + "\nplain █ line\n"
           + "gigpo-step {torn\n").encode()
    log, got = io.StringIO(), []
    forward(io.BytesIO(out), log, got.append)
    assert log.getvalue() == out.decode()
    assert got == [{"note": "rank 0: imports done in 2.5 s"}, {"step": 1, "total": 2, **STEP}]


def test_step_line_figures():
    line = step_line({"round": 0, "step": 1, "total": 2, "global_step": 9, **STEP, "mfu": 0.3071})
    assert line == ("round 0 step 1/2 (global 9): loss 0.01235, kl 2e-05, entropy 1.5, grad norm 0.25, clip 0.125, "
                    "response 12.2 tokens, 1234 tokens/s, MFU 30.7%")
