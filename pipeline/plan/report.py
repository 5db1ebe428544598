"""The plan as text: the stages of a round, the trainer's and vLLM's memory per GPU, a round's files."""
from __future__ import annotations

from pipeline.plan.build import Plan, size
from pipeline.plan.layout import Tasks
from pipeline.plan.memory import TrainerMemory

ROW = "  {:<16}{:>11}  {}"


def render(p: Plan, title: str) -> str:
    lines = [f"plan of {title} on {p.cluster.workers} worker(s) x {p.cluster.gpus_per_worker} GPU(s) of "
             f"{size(p.cluster.gpu_memory)}", model_line(p),
             f"sequences: at most {p.seq_len} tokens (prompt + response), responses at most {p.response_len}",
             "a round:", *stage_lines(p), trainer_title(p), *trainer_lines(p.trainer, p)]
    if p.vllm is not None:
        lines += vllm_lines(p)
    lines += traffic_lines(p) + [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def model_line(p: Plan) -> str:
    s = p.shape
    tied = "tied" if s.tie_word_embeddings else "untied"
    count = f"{s.params / 1e9:.2f} B" if s.params >= 10**9 else f"{s.params / 1e6:.2f} M"
    return (f"model: {s.params:,} parameters ({count}) from {p.shape_source}: "
            f"{s.num_hidden_layers} layers, hidden {s.hidden_size}, MLP {s.intermediate_size}, "
            f"{s.num_attention_heads} heads ({s.num_key_value_heads} KV) of {s.head_dim}, vocab {s.vocab_size}, "
            f"{tied} embeddings")


def _tasks(t: Tasks, workers: int) -> str:
    return (f"{t.count} Dask task(s) of {t.per_task} group(s) ({t.episodes_per_task} episodes at once) "
            f"on {workers} worker(s)")


def stage_lines(p: Plan) -> list[str]:
    c, b = p.cfg, p.batches
    ev = c.evaluation
    when = "after the last round" if ev.every == 0 else \
        "after every round" if ev.every == 1 else f"after every {ev.every}th round and the last"
    steps = "..".join(map(str, b.optimizer_steps))
    accum = f"{b.grad_accum} accumulation step(s)" if b.grad_accum else "ranks that cannot share it"
    out = [f"  collect    {c.tasks_per_round} tasks x {c.rollout.group_size} episodes: "
           f"{_tasks(p.collect, p.rollout_workers)} (rollout.resources {c.rollout.resources}), "
           f"{c.rollout.policy.backend} backend",
           "  advantage  one Dask task per steps shard, on any worker (CPU)",
           f"  train      {p.ranks} rank(s){p.ranks_how}: mini-batch {b.mini_batch} rows = {p.ranks} rank(s) x "
           f"{b.micro_batch} rows x {accum}; {b.rows[0]}..{b.rows[1]} rows -> {steps} optimizer step(s) "
           f"(ppo_epochs {b.epochs})"]
    if p.evaluate is not None:
        out.append(f"  evaluate   {ev.tasks} held-out tasks x {ev.group_size} episode(s): "
                   f"{_tasks(p.evaluate, p.rollout_workers)}, {when}")
    return out


def trainer_title(p: Plan) -> str:
    t = p.cfg.trainer
    precision = "bf16 (auto: bf16 on a GPU)" if t.precision == "auto" else t.precision
    return f"trainer memory per GPU (ZeRO-{t.zero_stage}, {precision}, {max(p.ranks, 1)} rank(s)):"


def trainer_lines(m: TrainerMemory, p: Plan) -> list[str]:
    t = p.cfg.trainer
    master = " + fp32 master weights" if t.precision != "fp32" else ""
    ckpt = "gradient checkpointing" if t.gradient_checkpointing else "no gradient checkpointing"
    chunk = m.logits // (4 * p.shape.vocab_size)
    share = f"{100 * m.total / p.cluster.gpu_memory:.1f}% of {size(p.cluster.gpu_memory)}"
    rows = [("weights", m.weights, ""), ("gradients", m.gradients, ""),
            ("AdamW state", m.optimizer, f"2 fp32 moments{master}"),
            ("activations", m.activations, f"{t.micro_batch_size} x {p.seq_len} tokens, {ckpt}"),
            ("logit chunk", m.logits, f"{chunk} tokens x {p.shape.vocab_size} vocab, fp32"),
            ("KL reference", m.reference, f"trainer.kl_coef={t.kl_coef}"), ("total", m.total, share)]
    return [ROW.format(name, size(n), why).rstrip() for name, n, why in rows]


def vllm_lines(p: Plan) -> list[str]:
    v, pol = p.vllm, p.cfg.rollout.policy
    budget = f"kv_cache_memory_bytes {v.kv_cache_memory_bytes}" if v.kv_cache_memory_bytes else \
        f"gpu_memory_utilization {v.utilization} = {size(v.utilization * p.cluster.gpu_memory)}"
    at_once = max(t.episodes_per_task for t in (p.collect, p.evaluate) if t is not None)
    held = (f"{v.kv_bytes_per_token:,} bytes per token: {v.tokens:,} tokens = {v.sequences} sequences of "
            f"{v.max_model_len}; a task plays {at_once} at once")
    return [f"vLLM per GPU ({pol.dtype}, {budget}):", ROW.format("weights", size(v.weights), "").rstrip(),
            ROW.format("KV cache", size(max(v.kv_cache, 0)), held)]


def traffic_lines(p: Plan) -> list[str]:
    f, t = p.traffic, p.cfg.trainer
    saves = "..".join(map(str, f.saves))
    rows = [("checkpoint", f.checkpoint, "HF export"),
            ("DeepSpeed state", f.state, f"saved {saves} time(s) a round (trainer.optimizer_state={t.optimizer_state}, "
                                         f"save_every={t.save_every})"),
            ("step rows", f.rows, f"{p.batches.rows[1]} rows at most, token columns + advantages"),
            ("written", f.written, "a round, at most"),
            ("read", f.read, f"a round, at most: checkpoint by {f.readers.collect_workers} collect + "
                             f"{f.readers.eval_workers} evaluate worker(s); policy, reference, state and rows by "
                             f"{f.readers.ranks} rank(s)")]
    return ["a round's files:"] + [ROW.format(name, size(n), why) for name, n, why in rows]
