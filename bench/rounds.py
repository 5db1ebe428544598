"""Rounds with cold and resident engines: the same rounds run both ways, and where each round's time goes.

    python -m bench.rounds                                   # 3 rounds, HF backend, ~75 M-parameter model
    python -m bench.rounds --rounds 4 --backend vllm         # vLLM (in an environment with vllm and DeepSpeed)

Each mode (``MODES``: cold, a fresh rollout engine per checkpoint and a fresh
trainer process per round; resident, each checkpoint loaded in place and one
trainer process per rank for the run) runs ``configs/smoke.yaml`` from scratch in
``OUT/<mode>`` with a random Qwen2-shaped model of ``MODEL`` (~75 M parameters,
so that loading it shows), one Dask worker (the collect's summed task times are
then on the wall clock) and no evaluation. Per round, from ``RUN/metrics.jsonl``
and the trainer's step records: wall (the stages' seconds), generate and env
(``generate_seconds``, ``env_seconds``), update (the optimizer steps'
``step_time_s``) and the rest, overhead, with the collect's ``policy_load_seconds``
beside it. The last line compares the mean overhead of rounds 1.. (round 0
loads a first engine in both modes): ``overhead per round: cold X s, resident Y s
(ratio resident / cold)``. With ``--overlap`` a third mode, ``overlap``, runs the
resident rounds with ``overlap=1`` (each collect beside the previous round's
training); as its stages overlap, the modes are compared on each driver's whole
wall clock (``driver wall: ...``). The drivers' output goes to ``OUT/<mode>.log``;
each run directory (~2 GB of checkpoints and optimizer state) is removed once its
times are read, unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Mode -> config overrides: whether the rollout engines and the trainer ranks stay resident across rounds.
MODES: dict[str, list[str]] = {
    "cold": ["rollout.policy.resident=false", "trainer.resident=false"],
    "resident": ["rollout.policy.resident=true", "trainer.resident=true"],
}
OVERLAP = {"overlap": MODES["resident"] + ["overlap=1"]}
MODEL = ["tiny_model.hidden_size=768", "tiny_model.intermediate_size=2048", "tiny_model.num_hidden_layers=12",
         "tiny_model.num_attention_heads=12", "tiny_model.num_key_value_heads=2"]
# Small rounds, so that a round is mostly what surrounds the work: 2 tasks x 2 episodes x 3 steps.
WORK = ["tasks_per_round=2", "rollout.group_size=2", "rollout.env.max_steps=3", "games.generate_train=4",
        "games.generate_eval=1", "evaluation.tasks=0", "cluster.n_workers=1", "trainer.kl_coef=0",
        "trainer.old_logprobs=rollout", "logging.tensorboard=false"]
BACKENDS = {"hf": [], "vllm": ["rollout.policy.backend=vllm", "rollout.policy.max_model_len=2048",
                               "rollout.policy.vllm_args={enforce_eager: true}"]}
COLUMNS = ("wall", "generate", "env", "update", "overhead", "policy load")


def driver(run_dir: Path, rounds: int, overrides: list[str], log: Path) -> float:
    """Run ``pipeline/round.py`` on a fresh run directory (its output into ``log``); its wall seconds. Raises if it
    fails."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "pipeline" / "round.py"), "--config", "configs/smoke.yaml", "--rounds",
           str(rounds), f"run_dir={run_dir}", *overrides]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def round_times(run_dir: Path) -> dict[int, dict[str, float]]:
    """Round -> seconds of ``COLUMNS`` from a run's committed records (rounds >= 0)."""
    import storage
    from pipeline.records import read_train_steps

    run = storage.open_run(str(run_dir))
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m["round"] < 0:
            continue
        t = {"wall": sum(m["stage_seconds"].values()), "generate": m["generate_seconds"], "env": m["env_seconds"],
             "update": sum(s["step_time_s"] for s in read_train_steps(run, m["round"])),
             "policy load": m["policy_load_seconds"]}
        t["overhead"] = t["wall"] - t["generate"] - t["env"] - t["update"]
        out[m["round"]] = t
    return out


def table(times: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    """One row per mode and round, seconds with one decimal.

    >>> print("\\n".join(table({"cold": {0: dict.fromkeys(COLUMNS, 1.0)}})))
    mode      round  wall s  generate s   env s  update s  overhead s  policy load s
    cold          0     1.0         1.0     1.0       1.0         1.0            1.0
    """
    widths = [max(len(c) + 2, 6) + 2 for c in COLUMNS]
    lines = ["mode      round" + "".join(f"{c + ' s':>{w}}" for c, w in zip(COLUMNS, widths))]
    for mode, rounds in times.items():
        for r, t in sorted(rounds.items()):
            lines.append(f"{mode:<9}{r:>6}" + "".join(f"{t[c]:>{w}.1f}" for c, w in zip(COLUMNS, widths)))
    return lines


def mean_overhead(rounds: dict[int, dict[str, float]]) -> float:
    """Mean overhead of rounds 1.. (all rounds when there is only round 0).

    >>> mean_overhead({0: {"overhead": 9.0}, 1: {"overhead": 2.0}, 2: {"overhead": 4.0}})
    3.0
    """
    later = [t["overhead"] for r, t in rounds.items() if r > 0] or [t["overhead"] for t in rounds.values()]
    return sum(later) / len(later)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rounds", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="hf")
    ap.add_argument("--out", default="bench/out/rounds", help="folder of the run directories and logs")
    ap.add_argument("--overlap", action="store_true", help="also run the resident rounds with overlap=1")
    ap.add_argument("--keep", action="store_true", help="keep the run directories (OUT/<mode>)")
    ap.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides for both modes")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    times, walls = {}, {}
    for mode, overrides in (MODES | (OVERLAP if args.overlap else {})).items():
        run_dir = out / mode
        walls[mode] = driver(run_dir, args.rounds, [*MODEL, *WORK, *BACKENDS[args.backend], *args.overrides,
                                                    *overrides], out / f"{mode}.log")
        times[mode] = round_times(run_dir)
        if not args.keep:
            shutil.rmtree(run_dir)
    print("\n".join(table(times)))
    cold, resident = mean_overhead(times["cold"]), mean_overhead(times["resident"])
    print(f"wall time of this invocation: {time.perf_counter() - start:.0f} s")
    print("driver wall: " + ", ".join(f"{mode} {wall:.0f} s" for mode, wall in walls.items()))
    print(f"overhead per round: cold {cold:.1f} s, resident {resident:.1f} s (ratio {resident / cold:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
