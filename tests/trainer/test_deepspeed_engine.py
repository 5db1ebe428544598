"""The real DeepSpeed engine (CPU, gloo, 1 rank in this process) on the tiny Qwen2 model."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from trainer.batches import BadRoundError
from trainer.config import TrainerConfig
from trainer.deepspeed_engine import extensions_dir
from trainer.updates import mean_logprob, train_round

pytestmark = pytest.mark.usefixtures("dist_group")
QUIET = dict(progress=False)


def _response_logprobs(model_dir, prompt: list[int], response: list[int]) -> list[float]:
    """Per-token log-probs of ``response`` after ``prompt``: a plain HF forward, no trainer code."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return [logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(response)]


def _two_sequences(model_dir) -> pl.DataFrame:
    """Rollout log-probs set so the ratios are A: [1.5, 1.0] (A=+1) and B: [0.5, 4.0, 2.0] (A=-1)."""
    prompts, responses = [[11, 12, 13], [21, 22]], [[31, 32], [41, 42, 43]]
    ratios = [[1.5, 1.0], [0.5, 4.0, 2.0]]
    logprobs = [[lp - math.log(r) for lp, r in zip(_response_logprobs(model_dir, p, s), rs)]
                for p, s, rs in zip(prompts, responses, ratios)]
    return pl.DataFrame({"prompt_ids": prompts, "response_ids": responses, "response_logprobs": logprobs,
                         "advantage": [1.0, -1.0]})


HAND = {"token-mean": 0.72, "seq-mean-token-sum": 1.8, "seq-mean-token-mean": (-1.1 + 5.8 / 3) / 2}


@pytest.mark.parametrize("mode", sorted(HAND))
def test_engine_loss_matches_hand_value(tiny_model, tmp_path, mode):
    # one mini-batch of 2 rows cut into 2 micro-batches (gradient accumulation 2)
    cfg = TrainerConfig(loss_agg_mode=mode, old_logprobs="rollout", kl_coef=0.0, mini_batch_size=2,
                        micro_batch_size=1, lr=1e-3)
    res = train_round(cfg, tiny_model, _two_sequences(tiny_model), tmp_path / "out", **QUIET)
    m = res.metrics[0]
    assert res.steps == 1 and m["loss"] == pytest.approx(HAND[mode], abs=1e-5)
    assert m["clip_frac"] == pytest.approx(2 / 5) and m["clip_frac_lower"] == pytest.approx(1 / 5)
    assert m["approx_kl"] == pytest.approx(-math.log(1.5 * 0.5 * 4.0 * 2.0) / 5, abs=1e-5)
    assert m["response_tokens"] == 5 and m["tokens"] == 5 + 5
    assert m["grad_norm"] > 0 and m["tokens_per_s"] > 0 and "mfu" not in m


def test_sft_loss_is_the_mean_token_nll_of_a_plain_forward(tiny_model, tmp_path):
    rows = _two_sequences(tiny_model)
    nll = -sum(sum(_response_logprobs(tiny_model, p, r))
               for p, r in zip(rows["prompt_ids"].to_list(), rows["response_ids"].to_list()))
    cfg = TrainerConfig(loss="sft", kl_coef=0.0, mini_batch_size=2, micro_batch_size=1, lr=1e-3)
    junk = rows.with_columns(response_logprobs=pl.col("response_logprobs").list.eval(pl.element() * float("nan")))
    res = train_round(cfg, tiny_model, junk, tmp_path / "out", **QUIET)  # SFT reads no log-probs
    assert res.metrics[0]["loss"] == pytest.approx(nll / 5, abs=1e-5)
    assert res.metrics[0]["response_tokens"] == 5 and res.metrics[0]["pg_loss"] == 0.0


def test_mean_logprob_is_the_token_mean_of_a_plain_forward(tiny_model):
    rows = _two_sequences(tiny_model).select("prompt_ids", "response_ids")  # nothing else is read
    pairs = zip(rows["prompt_ids"].to_list(), rows["response_ids"].to_list())
    hand = [lp for p, r in pairs for lp in _response_logprobs(tiny_model, p, r)]
    assert len(hand) == 5
    assert mean_logprob(tiny_model, rows, TrainerConfig(logprob_micro_batch_size=1)) \
        == pytest.approx(sum(hand) / 5, abs=1e-5)
    hot = mean_logprob(tiny_model, rows.lazy(), TrainerConfig(temperature=2.0))
    assert hot != pytest.approx(sum(hand) / 5, abs=1e-3)  # the temperature divides the logits


def test_recomputed_old_logprobs_give_ratio_one(tiny_model, tmp_path, make_rows):
    cfg = TrainerConfig(old_logprobs="recompute", kl_coef=0.0, mini_batch_size=4, micro_batch_size=2)
    res = train_round(cfg, tiny_model, make_rows(4), tmp_path / "out", **QUIET)  # rollout log-probs are junk
    assert res.metrics[0]["approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert res.metrics[0]["clip_frac"] == 0.0


def test_updates_raise_positive_and_lower_negative_actions(tiny_model, tmp_path):
    tok = PreTrainedTokenizerFast.from_pretrained(tiny_model)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Your task is to: heat some egg."}],
                                     add_generation_prompt=True)["input_ids"]
    good = tok("<action>go to microwave 1</action><|im_end|>")["input_ids"]
    bad = tok("<action>open drawer 2</action><|im_end|>")["input_ids"]
    df = pl.DataFrame({"prompt_ids": [prompt] * 4, "response_ids": [good, bad, good, bad],
                       "response_logprobs": [[0.0] * len(r) for r in (good, bad, good, bad)],
                       "advantage": [1.0, -1.0, 1.0, -1.0]})
    cfg = TrainerConfig(lr=3e-3, kl_coef=0.01, mini_batch_size=4, micro_batch_size=2, ppo_epochs=3)
    res = train_round(cfg, tiny_model, df, tmp_path / "out", ref_path=tiny_model, **QUIET)
    assert res.steps == 3
    before = [sum(_response_logprobs(tiny_model, prompt, r)) for r in (good, bad)]
    after = [sum(_response_logprobs(res.checkpoint, prompt, r)) for r in (good, bad)]
    assert after[0] > before[0] + 0.1 and after[1] < before[1] - 0.1
    assert res.metrics[-1]["kl_loss"] > 0  # moved away from the reference


def test_zero_stages_match_stage_0(tiny_model, tmp_path, make_rows, load_weights):
    df = make_rows(12, seed=1)
    cfg = dict(lr=1e-3, kl_coef=0.01, entropy_coeff=0.01, mini_batch_size=6, micro_batch_size=3, ppo_epochs=1)
    weights = {}
    for stage in (0, 1, 2, 3):
        res = train_round(TrainerConfig(zero_stage=stage, **cfg), tiny_model, df, tmp_path / f"z{stage}",
                          ref_path=tiny_model, **QUIET)
        weights[stage] = load_weights(res.checkpoint)
        assert res.steps == 2
    init = load_weights(tiny_model)
    moved = max((weights[0][k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-3
    for stage in (1, 2, 3):  # Adam turns last-bit gradient differences into ~1e-6 steps; moves are ~2e-3
        for k, v in weights[0].items():
            assert torch.allclose(weights[stage][k], v, atol=1e-5, rtol=0), (stage, k)


def test_export_is_a_loadable_hf_checkpoint(tiny_model, tmp_path, make_rows):
    res = train_round(TrainerConfig(kl_coef=0.0, mini_batch_size=4, micro_batch_size=4, lr=1e-3),
                      tiny_model, make_rows(4), tmp_path / "out", **QUIET)
    names = {p.name for p in res.checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    tok = PreTrainedTokenizerFast.from_pretrained(res.checkpoint)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|im_start|>")
    model = AutoModelForCausalLM.from_pretrained(res.checkpoint)
    assert model.config.vocab_size == len(tok)


def test_bad_rounds_fail_before_any_update(tiny_model, tmp_path, make_rows):
    cfg = TrainerConfig(kl_coef=0.0, mini_batch_size=4, micro_batch_size=2)
    df = make_rows(4)
    nan = df.with_columns(advantage=pl.Series([0.0, 1.0, float("nan"), 0.0]))
    with pytest.raises(BadRoundError, match=r"'advantage' of row 2 \(episode_id=2, step=0\) is nan"):
        train_round(cfg, tiny_model, nan, tmp_path / "nan", **QUIET)
    vocab = AutoModelForCausalLM.from_pretrained(tiny_model).config.vocab_size
    oov = df.with_columns(response_ids=pl.Series([[1], [2], [vocab + 3], [4]], dtype=pl.List(pl.Int32)),
                          response_logprobs=pl.Series([[-1.0]] * 4, dtype=pl.List(pl.Float32)))
    with pytest.raises(BadRoundError, match=rf"token id {vocab + 3} outside the vocabulary \[0, {vocab}\)"):
        train_round(cfg, tiny_model, oov, tmp_path / "oov", **QUIET)
    with pytest.raises(BadRoundError, match=r"longer than max_seq_len=8"):
        train_round(TrainerConfig(kl_coef=0.0, max_seq_len=8, mini_batch_size=4, micro_batch_size=2),
                    tiny_model, df, tmp_path / "long", **QUIET)
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_path"):
        train_round(TrainerConfig(), tiny_model, df, tmp_path / "ref", **QUIET)
    assert not any((tmp_path / d).exists() for d in ("nan", "oov", "long", "ref"))


def test_empty_round_errors_or_skips(tiny_model, tmp_path, make_rows, load_weights):
    empty = make_rows(3).head(0)
    with pytest.raises(BadRoundError, match="no trainable rows"):
        train_round(TrainerConfig(kl_coef=0.0), tiny_model, empty, tmp_path / "e", **QUIET)
    res = train_round(TrainerConfig(kl_coef=0.0, empty_round="skip"), tiny_model, empty, tmp_path / "s", **QUIET)
    assert res.skipped == "empty round" and res.steps == 0
    w, init = load_weights(res.checkpoint), load_weights(tiny_model)
    assert all(torch.equal(w[k], init[k]) for k in init)


def test_lr_warmup_and_metrics_per_step(tiny_model, tmp_path, make_rows):
    cfg = TrainerConfig(kl_coef=0.0, lr=1e-3, warmup_steps=2, mini_batch_size=2, micro_batch_size=2)
    res = train_round(cfg, tiny_model, make_rows(6), tmp_path / "out", **QUIET)
    assert [m["lr"] for m in res.metrics] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert all(np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 for m in res.metrics)
    decay = TrainerConfig(kl_coef=0.0, lr=1e-3, warmup_steps=1, lr_decay="linear", mini_batch_size=2,
                          micro_batch_size=2, ppo_epochs=2)
    res = train_round(decay, tiny_model, make_rows(6), tmp_path / "decay", **QUIET)
    assert [m["lr"] for m in res.metrics] == pytest.approx([1e-3, 1e-3, 8e-4, 6e-4, 4e-4, 2e-4])


def test_packed_and_padded_rounds_train_alike(tiny_model, tmp_path, make_rows):
    """Through DeepSpeed: the same losses and weights; only the padded path processes padding."""
    rows = make_rows(6, seed=3, prompt=(2, 20))
    cfg = dict(kl_coef=0.01, old_logprobs="recompute", lr=1e-3, mini_batch_size=6, micro_batch_size=3)
    runs = {packing: train_round(TrainerConfig(packing=packing, **cfg), tiny_model, rows, tmp_path / f"{packing}",
                                 ref_path=tiny_model, **QUIET) for packing in (True, False)}
    lens = (rows["prompt_ids"].list.len() + rows["response_ids"].list.len()).to_numpy()
    plan = np.sort(lens)[::-1].reshape(2, 3)  # one mini-batch, sorted by length, cut in two micro-batches
    padded = 1 - lens.sum() / (plan.max(axis=1) * 3).sum()
    assert [m["padding_share"] for m in runs[True].metrics] == [0.0]
    assert runs[False].metrics[0]["padding_share"] == pytest.approx(padded, abs=1e-12) and padded > 0.1
    for key in ("loss", "pg_loss", "kl_loss", "entropy", "grad_norm"):
        assert runs[True].metrics[0][key] == pytest.approx(runs[False].metrics[0][key], abs=1e-5)


def test_state_dir_removed_after_export_unless_kept(tiny_model, tmp_path, make_rows):
    cfg = dict(kl_coef=0.0, mini_batch_size=2, micro_batch_size=2, save_every=1, optimizer_state="reset")
    train_round(TrainerConfig(**cfg), tiny_model, make_rows(4), tmp_path / "a", state_dir=tmp_path / "sa", **QUIET)
    assert not (tmp_path / "sa").exists()
    train_round(TrainerConfig(keep_state=True, **cfg), tiny_model, make_rows(4), tmp_path / "b",
                state_dir=tmp_path / "sb", **QUIET)
    assert (tmp_path / "sb" / "latest").read_text().strip() == "step2"
    assert sorted(p.name for p in (tmp_path / "sb").glob("step*")) == ["step2"]
    shutil.rmtree(tmp_path / "sb")
    # optimizer_state: keep leaves the final state for the next round, even without save_every
    train_round(TrainerConfig(**{**cfg, "optimizer_state": "keep", "save_every": 0}), tiny_model, make_rows(4),
                tmp_path / "c", state_dir=tmp_path / "sc", **QUIET)
    assert (tmp_path / "sc" / "latest").read_text().strip() == "step2"


def test_overflowing_loss_stops_before_update_and_export(tiny_model, tmp_path, make_rows, load_weights):
    huge = make_rows(4).with_columns(advantage=pl.lit(3e38))  # finite input, but the loss sum overflows
    with pytest.raises(FloatingPointError, match="non-finite loss -?inf at optimizer step 0"):
        train_round(TrainerConfig(kl_coef=0.0, mini_batch_size=4, micro_batch_size=4), tiny_model, huge,
                    tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def _load_op(ext_dir: Path, timeout_s: float, path: str | None = None) -> subprocess.CompletedProcess:
    """``python -m trainer.build_ops`` with its extensions under ``ext_dir`` (and ``PATH`` set to ``path`` if
    given): it builds or loads the op."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ext_dir), "DS_ACCELERATOR": "cpu"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "trainer.build_ops"], env=env, timeout=timeout_s,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def built_op() -> Path:
    """The op's build folder as the trainers of this environment build it (built now if it is not)."""
    built = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or extensions_dir())
    assert _load_op(built, timeout_s=600).returncode == 0
    return built / "deepspeed_shm_comm"


def _copy_of_the_built_op(built_op: Path, tmp_path: Path) -> Path:
    """``built_op`` copied (mtimes kept: nothing to rebuild) to a folder of extensions under ``tmp_path / "ext"``;
    the copy's build folder."""
    copy = tmp_path / "ext" / built_op.name
    shutil.copytree(built_op, copy)
    return copy


def test_a_build_is_announced_before_it_starts_and_a_built_op_loads_without_a_word(built_op, tmp_path):
    copy = _copy_of_the_built_op(built_op, tmp_path)
    quiet = _load_op(tmp_path / "ext", timeout_s=120)
    assert (quiet.returncode, quiet.stdout) == (0, ""), quiet.stderr[-2000:]
    (copy / "deepspeed_shm_comm.so").unlink()  # its objects are kept: the build only links them again
    rebuilt = _load_op(tmp_path / "ext", timeout_s=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert rebuilt.stdout == (f"building DeepSpeed's CPU comm op in {copy} (once per Python environment, "
                              "about a minute) ...\n")
    assert (copy / "deepspeed_shm_comm.so").is_file()


def test_the_op_is_built_by_this_environments_ninja_whatever_comes_first_on_path(built_op, tmp_path):
    copy = _copy_of_the_built_op(built_op, tmp_path)
    built = (copy / "deepspeed_shm_comm.so").stat().st_mtime_ns
    other = tmp_path / "other-bin"
    other.mkdir()
    (other / "ninja").write_text("#!/bin/sh\necho 'another ninja' >&2\nexit 1\n")
    (other / "ninja").chmod(0o755)
    done = _load_op(tmp_path / "ext", timeout_s=120, path=os.pathsep.join([str(other), os.environ["PATH"]]))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (copy / "deepspeed_shm_comm.so").stat().st_mtime_ns == built  # loaded, not compiled again


def test_a_build_lock_left_by_a_killed_build_is_cleared(built_op, tmp_path):
    copy = _copy_of_the_built_op(built_op, tmp_path)
    (copy / "lock").touch()  # a killed build's lock file
    done = _load_op(tmp_path / "ext", timeout_s=120)  # torch alone waits on that lock forever
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (copy / "lock").exists()


def test_torch_extensions_build_in_a_folder_of_this_python_environment_unless_one_is_set(monkeypatch, tmp_path):
    from trainer.deepspeed_engine import import_deepspeed

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert extensions_dir("/opt/venvs/a") == str(tmp_path / "torch_extensions" / "venv-6e8a7832163e")
    assert extensions_dir() == extensions_dir(sys.prefix) != extensions_dir("/opt/venvs/a")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    import_deepspeed()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == extensions_dir()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    import_deepspeed()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "mine")


def test_no_test_module_moves_the_suites_op_builds_elsewhere(extensions_dir_at_start):
    # collection imports every test module before any test runs, so one that set TORCH_EXTENSIONS_DIR at import
    # would make the whole suite build the op again, outside this environment's folder
    allowed = {extensions_dir_at_start} if extensions_dir_at_start else {None, extensions_dir()}
    assert os.environ.get("TORCH_EXTENSIONS_DIR") in allowed
