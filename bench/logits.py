"""Peak memory of log-probs and entropy over a 151,936-token vocabulary: one full pass vs LM-head chunks.

    python -m bench.logits --rows 16 --prompt-len 64 --response-len 128 --chunks 0 512 256

For each ``logit_chunk_tokens`` (0: one pass over all response tokens, as before
chunking) a fresh subprocess builds a small random Qwen2 model with Qwen2.5's
vocabulary, runs ``LogProbModel`` forward and backward on one packed
micro-batch and reports its peak RSS (``ru_maxrss``) above the RSS just before
the forward, and the time; the log-probs' sum is printed to show the settings agree.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VOCAB = 151_936


def measure(rows: int, prompt_len: int, response_len: int, chunk: int) -> dict:
    """Forward + backward of one micro-batch in this process; peak RSS above the pre-forward RSS."""
    import numpy as np
    import polars as pl
    import psutil
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from trainer.batches import collate, load_rows
    from trainer.model import LogProbModel

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, attn_implementation="sdpa", use_cache=False)
    model = LogProbModel(AutoModelForCausalLM.from_config(config, dtype=torch.float32), 1.0, chunk)
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"prompt_ids": rng.integers(0, VOCAB, (rows, prompt_len)).tolist(),
                          "response_ids": rng.integers(0, VOCAB, (rows, response_len)).tolist(),
                          "response_logprobs": np.full((rows, response_len), -1.0).tolist(),
                          "advantage": np.ones(rows)})
    data = load_rows(frame, VOCAB, prompt_len + response_len)
    mb = collate(data, np.arange(rows), 0, data.rollout_logprobs, packed=True)
    base = psutil.Process().memory_info().rss
    start = time.perf_counter()
    lp, ent = model(mb.input_ids, mb.attention_mask, mb.position_ids, mb.resp_index, mb.response_ids, mb.mask)
    (lp.sum() + ent.sum()).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"chunk": chunk, "peak_mib": (peak - base) / 2**20, "seconds": time.perf_counter() - start,
            "tokens": int(mb.mask.sum()), "logprob_sum": float(lp.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16, help="rows in the micro-batch")
    ap.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per row")
    ap.add_argument("--response-len", type=int, default=128, help="response tokens per row")
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 512, 256], help="logit_chunk_tokens settings")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.rows, args.prompt_len, args.response_len, args.child)))
        return
    print(f"{args.rows} rows x ({args.prompt_len} + {args.response_len}) tokens, vocabulary {VOCAB:,}; "
          f"full fp32 logits would be {args.rows * args.response_len * VOCAB * 4 / 2**20:,.0f} MiB")
    for chunk in args.chunks:
        cmd = [sys.executable, "-m", "bench.logits", "--rows", str(args.rows), "--prompt-len", str(args.prompt_len),
               "--response-len", str(args.response_len), "--child", str(chunk)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        label = "one full pass" if chunk == 0 else f"chunks of {chunk}"
        print(f"  logit_chunk_tokens={chunk:<5} ({label}): peak +{r['peak_mib']:,.0f} MiB over {r['tokens']:,} "
              f"response tokens, forward+backward {r['seconds']:.2f} s, sum of log-probs {r['logprob_sum']:.4f}")


if __name__ == "__main__":
    main()
