"""``python -m pipeline.plan``: what a run config will do on a cluster, before renting it.

    python -m pipeline.plan --config configs/alfworld_qwen2.5_1.5b.yaml --workers 8 --gpu-memory 80GiB \\
        --model-config configs/models/qwen2.5-1.5b-instruct.json [key.path=value ...]

Loads the config as the driver does, reads the model's shape (``--model-config``, else the base model's
config.json: a folder, or a hub id from the local cache only) and prints the plan: who runs each stage of a
round, the batch arithmetic, the memory of a training rank and of vLLM per GPU, a round's files. Starts no
cluster and imports neither torch, vLLM nor DeepSpeed. Exit codes: 0 it fits, 2 a bad config or model, or it
cannot run on the described cluster (one line per problem, naming the keys to change).
"""
from __future__ import annotations

import argparse
import re
import sys

from pipeline.config import ConfigError, load
from pipeline.plan.build import make_plan
from pipeline.plan.layout import Cluster
from pipeline.plan.report import render
from pipeline.plan.shape import ShapeError, model_shape
from pipeline.run_config import RunConfig

UNITS = {"": 1, "B": 1, "K": 2**10, "KIB": 2**10, "KB": 10**3, "M": 2**20, "MIB": 2**20, "MB": 10**6,
         "G": 2**30, "GIB": 2**30, "GB": 10**9, "T": 2**40, "TIB": 2**40, "TB": 10**12}


def memory_size(text: str) -> int:
    """Bytes of ``80GiB``, ``141 GiB``, ``80GB`` (decimal), ``80G`` (binary) or a plain number of bytes.

    >>> memory_size("80GiB"), memory_size("1.5 KB")
    (85899345920, 1500)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 80GiB, 141GiB or 80GB")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return int(text)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline.plan", description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML run config (default: built-in defaults)")
    ap.add_argument("--workers", type=positive, help="Dask workers (default: cluster.n_workers)")
    ap.add_argument("--gpu-memory", type=memory_size, default="80GiB", help="memory of one GPU (default 80GiB)")
    ap.add_argument("--gpus-per-worker", type=positive, default=1, help="GPUs each worker offers (default 1)")
    ap.add_argument("--model-config", help="the model's config.json (default: the base model's)")
    ap.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    try:
        cfg = load(RunConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        shape, source = model_shape(cfg, args.model_config)
    except ShapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cluster = Cluster(args.workers or cfg.cluster.n_workers, args.gpus_per_worker, args.gpu_memory)
    plan = make_plan(cfg, shape, source, cluster)
    print(render(plan, args.config or "the default config"))
    if args.workers is None:
        print(f"note: {cluster.workers} worker(s) as cluster.n_workers; pass --workers N for the cluster you rent")
    sys.stdout.flush()
    for line in plan.problems:
        print(f"cannot run: {line}", file=sys.stderr)
    return 2 if plan.problems else 0
