"""A run config's plan on a described cluster: the figures of every stage, and what cannot work.

>>> from pipeline.plan.shape import ModelShape
>>> shape = ModelShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
...                    num_key_value_heads=1, vocab_size=100, max_position_embeddings=512)
>>> p = make_plan(RunConfig(), shape, "test", Cluster(workers=2, gpus_per_worker=1, gpu_memory=2**30))
>>> p.ranks, p.collect.count, p.batches.grad_accum, p.problems
(1, 4, 32, ())
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.plan.layout import Batches, Cluster, Tasks, batch_problem, batches, round_rows, tasks, train_ranks
from pipeline.plan.memory import TrainerMemory, VllmMemory, trainer_memory, vllm_memory, vllm_setting
from pipeline.plan.shape import ModelShape
from pipeline.plan.traffic import Readers, RoundTraffic, round_traffic, row_bytes
from pipeline.run_config import RunConfig


@dataclass(frozen=True)
class Plan:
    """Everything the plan shows of a config on a cluster; ``problems`` are why it cannot run there."""

    cfg: RunConfig
    cluster: Cluster
    shape: ModelShape
    shape_source: str  # where the shape was read
    seq_len: int  # tokens of a prompt + response, at most
    response_len: int  # tokens of a response, at most
    rollout_workers: int  # workers offering rollout.resources
    collect: Tasks
    evaluate: Tasks | None  # None: no held-out evaluation
    ranks: int
    ranks_how: str
    batches: Batches
    trainer: TrainerMemory
    trainer_budget: int  # GPU bytes the trainer may use (less what a vLLM engine keeps while training)
    vllm: VllmMemory | None  # None: not the vllm backend
    traffic: RoundTraffic
    problems: tuple[str, ...]
    notes: tuple[str, ...]


def sequence_bound(cfg: RunConfig, shape: ModelShape) -> tuple[int, int]:
    """(prompt + response, response) tokens at most: the trainer's and the rollout's context limits, the
    response's ``max_new_tokens``."""
    rollout = vllm_setting(cfg.rollout, "max_model_len") if cfg.rollout.policy.backend == "vllm" \
        else cfg.rollout.policy.max_model_len
    seq = min(cfg.trainer.max_seq_len or shape.max_position_embeddings, rollout or shape.max_position_embeddings)
    return seq, min(cfg.rollout.sampling.max_new_tokens, seq - 1)


def make_plan(cfg: RunConfig, shape: ModelShape, source: str, cluster: Cluster) -> Plan:
    seq, resp = sequence_bound(cfg, shape)
    workers = cluster.offering(cfg.rollout.resources)
    r = cfg.rollout
    collect = tasks(cfg.tasks_per_round, r.group_size, r.groups_per_batch, workers)
    ev = cfg.evaluation
    evaluate = tasks(ev.tasks, ev.group_size, r.groups_per_batch, workers) if ev.tasks else None
    ranks, how = train_ranks(cfg, cluster)
    rows = round_rows(cfg)
    b = batches(cfg.trainer, ranks, rows)
    vllm = vllm_memory(shape, r, cluster.gpu_memory) if r.policy.backend == "vllm" else None
    held = vllm.reserved if vllm is not None and r.policy.free_between_rounds == "none" else 0
    readers = Readers(min(workers, collect.count), min(workers, evaluate.count) if evaluate else 0, ranks)
    traffic = round_traffic(shape.params, cfg.trainer, b.optimizer_steps, rows[1], row_bytes(seq, resp), readers)
    plan = Plan(cfg, cluster, shape, source, seq, resp, workers, collect, evaluate, ranks, how, b,
                trainer_memory(shape, cfg.trainer, max(ranks, 1), seq, resp), cluster.gpu_memory - held, vllm,
                traffic, (), ())
    return dataclasses.replace(plan, problems=tuple(problems(plan)), notes=tuple(notes(plan)))


def size(nbytes: float) -> str:
    """``nbytes`` in GiB, or MiB below one GiB.

    >>> size(3 * 2**30), size(47_813_888)
    ('3.00 GiB', '45.60 MiB')
    """
    return f"{nbytes / 2**30:.2f} GiB" if abs(nbytes) >= 2**30 else f"{nbytes / 2**20:.2f} MiB"


def problems(p: Plan) -> list[str]:
    """One line per reason the config cannot run on the cluster, naming the keys to change."""
    out = worker_problems(p)
    if p.ranks and (batch := batch_problem(p.cfg, p.ranks, p.ranks_how)):
        out.append(batch)
    if p.trainer.total > p.trainer_budget:
        out.append(trainer_problem(p))
    return out + (vllm_problems(p.vllm, p.cluster.gpu_memory) if p.vllm is not None else [])


def worker_problems(p: Plan) -> list[str]:
    c, cluster = p.cfg, p.cluster
    described = f"{cluster.workers} worker(s) x {cluster.gpus_per_worker} GPU(s)"
    out = []
    if not p.rollout_workers:
        out.append(f"rollout.resources={c.rollout.resources}: no worker offers them ({described}); "
                   "lower rollout.resources or pass --gpus-per-worker")
    able = cluster.offering(c.cluster.train_resources)
    if not p.ranks:
        out.append(f"cluster.train_ranks=auto: no worker offers cluster.train_resources="
                   f"{c.cluster.train_resources} ({described}); lower cluster.train_resources")
    elif p.ranks > able:
        out.append(f"cluster.train_ranks={p.ranks}: only {able} worker(s) offer cluster.train_resources="
                   f"{c.cluster.train_resources}; lower cluster.train_ranks or use more workers")
    return out


def trainer_problem(p: Plan) -> str:
    t, held = p.cfg.trainer, p.cluster.gpu_memory - p.trainer_budget
    where = "a GPU has beside vLLM (rollout.policy.free_between_rounds=none)" if held else "of a GPU"
    fixes = ([f"raise trainer.zero_stage (now {t.zero_stage})"] if t.zero_stage < 3 else []) \
        + ([] if t.gradient_checkpointing else ["set trainer.gradient_checkpointing=true"]) \
        + ([f"lower trainer.micro_batch_size (now {t.micro_batch_size})"] if t.micro_batch_size > 1 else []) \
        + (["set rollout.policy.free_between_rounds=sleep"] if held else [])
    fixes = fixes or [f"use more train ranks (cluster.train_ranks, now {p.ranks}) or GPUs with more memory"]
    change = fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + " or " + fixes[-1]
    return f"trainer: {size(p.trainer.total)} per GPU is more than the {size(p.trainer_budget)} {where}; {change}"


def vllm_problems(v: VllmMemory, gpu_memory: int) -> list[str]:
    if v.kv_cache_memory_bytes and v.weights + v.kv_cache_memory_bytes > gpu_memory:
        return [f"vLLM: its weights ({size(v.weights)}) and rollout.policy.kv_cache_memory_bytes="
                f"{v.kv_cache_memory_bytes} ({size(v.kv_cache_memory_bytes)}) are more than the {size(gpu_memory)} "
                "of a GPU; lower rollout.policy.kv_cache_memory_bytes"]
    if v.kv_cache <= 0:
        return [f"vLLM: its weights ({size(v.weights)}) fill rollout.policy.gpu_memory_utilization={v.utilization} "
                f"of a GPU ({size(v.utilization * gpu_memory)}), leaving no KV cache; raise "
                "rollout.policy.gpu_memory_utilization or rollout.policy.vllm_args.tensor_parallel_size"]
    if v.tokens < v.max_model_len:
        return [f"vLLM: its KV cache holds {v.tokens:,} tokens, less than one sequence of max_model_len "
                f"{v.max_model_len}; raise rollout.policy.gpu_memory_utilization (or kv_cache_memory_bytes) or "
                "lower rollout.policy.max_model_len"]
    return []


def notes(p: Plan) -> list[str]:
    """What runs, but not as one may expect."""
    out = []
    at_once = max(t.episodes_per_task for t in (p.collect, p.evaluate) if t is not None)
    if p.vllm is not None and p.vllm.tokens >= p.vllm.max_model_len and p.vllm.sequences < at_once:
        out.append(f"a rollout task plays {at_once} episodes at once; vLLM's KV cache holds {p.vllm.sequences} "
                   f"sequences of {p.vllm.max_model_len} tokens, so longer contexts wait their turn (lower "
                   "rollout.groups_per_batch or raise rollout.policy.gpu_memory_utilization)")
    t, f = p.cfg.trainer, p.traffic
    if f.saves[1] > 1:
        out.append(f"trainer.save_every={t.save_every} writes the DeepSpeed state ({size(f.state)}) up to "
                   f"{f.saves[1]} times a round, to resume a killed round; trainer.save_every=0 writes it "
                   + ("once, at the round's end" if t.optimizer_state == "keep" else "never"))
    return out
