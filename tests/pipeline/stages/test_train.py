"""The train stage's rank task: the trainer's step records reach the driver's console while it runs; a trainer
leaves nothing in the temp dir."""
from __future__ import annotations

import io
import sys
import tempfile
import time

import pytest
from distributed import Client, LocalCluster

import storage
from pipeline.config import to_dict
from pipeline.models.tiny_model import make_tiny_model
from pipeline.records import CHECKPOINT_STAGE
from pipeline.runtime.live import LiveSteps, emitter
from pipeline.runtime.ranks import supervise
from pipeline.stages import train
from tests.trainer.test_rounds import _advantages, commit_advantages
from trainer.config import TrainerConfig
from trainer.host import free_port
from trainer.protocol import NOTE_PREFIX
from trainer.step_metrics import live_record

STEP = {"loss": 0.5, "approx_kl": 0.001, "entropy": 2.0, "grad_norm": 1.0, "clip_frac": 0.0,
        "response_length": 10.0, "tokens_per_s": 100.0}


def _fake_rank(tag: str, log_path: str) -> int | None:
    """A rank task whose 'trainer' prints a note, two step records 3 s apart, then a plain line."""
    lines = [NOTE_PREFIX + "rank 0: model loaded"] + [live_record(s, 2, STEP | {"loss": s / 4}) for s in (1, 2)]
    code = "import time\n" + "".join(f"print({line!r}, flush=True); time.sleep(3)\n" for line in lines)
    with open(log_path, "w") as log:
        return supervise([sys.executable, "-c", code + "print('done')"], {}, log, emitter(3, tag, 40))


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def test_notes_and_step_records_of_the_current_attempt_are_printed_on_the_driver(client, tmp_path):
    out, got = io.StringIO(), []
    with LiveSteps(client, "attempt-2", got.append, out):
        stale = client.submit(_fake_rank, "attempt-1", str(tmp_path / "stale.log"), pure=False)
        assert stale.result() == 0
        current = client.submit(_fake_rank, "attempt-2", str(tmp_path / "log"), pure=False)
        while not out.getvalue() and not current.done():
            time.sleep(0.05)
        assert not current.done(), "the first step was printed only once the trainer had ended"
        assert current.result() == 0
        deadline = time.monotonic() + 10
        while out.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert out.getvalue().splitlines() == [
        "rank 0: model loaded",
        "round 3 step 1/2 (global 41): loss 0.25, kl 0.001, entropy 2, grad norm 1, clip 0, response 10.0 tokens, "
        "100 tokens/s",
        "round 3 step 2/2 (global 42): loss 0.5, kl 0.001, entropy 2, grad norm 1, clip 0, response 10.0 tokens, "
        "100 tokens/s"]
    steps = [{k: v for k, v in m.items() if k != "worker"} for m in got]  # the records, for the trackers
    assert steps == [{"step": s, "total": 2, **STEP, "loss": s / 4, "round": 3, "tag": "attempt-2",
                      "global_step": 40 + s} for s in (1, 2)]
    assert (tmp_path / "log").read_text().splitlines()[-1] == "done"


def test_a_trainer_process_leaves_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # this process's too
    run = storage.open_run(str(tmp_path / "run"))
    commit_advantages(run, 0, _advantages(0))
    policy = str(make_tiny_model(tmp_path / "tiny", seed=0))
    cfg = TrainerConfig(kl_coef=0.0, mini_batch_size=4, micro_batch_size=2, num_threads=1)
    train.train_rank(run.uri, 0, policy, None, to_dict(cfg), rank=0, world=1, master="127.0.0.1",
                     port=free_port())
    assert run.is_committed(0, CHECKPOINT_STAGE)
    assert list(tmp.iterdir()) == []
