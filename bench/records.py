"""A benchmark's finished runs, kept in a folder that is committed with the project.

A long benchmark outlives the machine it started on: the run directories under
``bench/out`` stay behind, the records travel with the repository. ``RECORDS/warm.json``
names what every recorded run started from (the warm start's weights, the setting
and the float kernels); ``RECORDS/<arm>-s<seed>.jsonl`` is a finished arm-seed run's
``metrics.jsonl``. A rerun on any machine rebuilds the warm start, checks that it is
the recorded one, and runs only the arm-seeds that have no record yet.
"""
from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.config import config_hash, load
from pipeline.run_config import RunConfig
from storage import open_existing_run
from storage.shards import put_atomic

# Float kernels every machine of this kind has (AVX2), so that an AVX2-only and an AVX-512 CPU can build the
# same warm start. Not guaranteed: on AMD CPUs MKL runs this setting as CNR:AUTO. check_warm is the guard.
AVX2_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT"}
WEIGHTS = "model.safetensors"
WARM_FILE = "warm.json"


@dataclass(frozen=True)
class WarmRecord:
    """What every recorded run of a benchmark started from."""

    setting_hash: str  # hash of the config with the benchmark's overrides (run_dir aside)
    kernels: dict[str, str]  # float-kernel environment of every run ({}: the machine's native kernels)
    weights_sha256: str  # SHA-256 of the warm start's model.safetensors (round -1's checkpoint)
    cpu: str  # the CPU that first made it (the /proc/cpuinfo model name, else `platform.processor()`)


def setting_hash(config: str, overrides: list[str]) -> str:
    """Hash of the config with ``overrides``, independent of where the run directory lies."""
    return config_hash(load(RunConfig, config, [*overrides, "run_dir=benchmark"]))


def warm_weights_sha256(warm: Path) -> str:
    """The committed SHA-256 of the warm run's round -1 model weights."""
    manifest = open_existing_run(str(warm)).manifest(-1, "checkpoint")
    shas = [s.sha256 for s in (manifest.files if manifest else ()) if Path(s.path).name == WEIGHTS]
    if len(shas) != 1:
        raise SystemExit(f"{warm}: round -1 has no committed checkpoint with one {WEIGHTS}")
    return shas[0]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def read_warm(records: Path) -> WarmRecord | None:
    """The recorded warm start, or None before the first one is recorded."""
    path = records / WARM_FILE
    return WarmRecord(**json.loads(path.read_text())) if path.exists() else None


def record_path(records: Path, name: str) -> Path:
    """Where run ``name``'s (``<arm>-s<seed>``) finished metrics are kept."""
    return records / f"{name}.jsonl"


def check_setting(records: Path, setting: str, kernels: dict[str, str]) -> None:
    """Before any work: the recorded runs must come from this setting and these kernels."""
    path, rec = records / WARM_FILE, read_warm(records)
    if rec is None:
        return
    if rec.setting_hash != setting:
        raise SystemExit(f"{path}: recorded setting_hash {rec.setting_hash}, this config and overrides give "
                         f"{setting}; use another --records folder")
    if rec.kernels != kernels:
        raise SystemExit(f"{path}: recorded kernels {rec.kernels}, this invocation uses {kernels}")


def check_warm(records: Path, setting: str, kernels: dict[str, str], warm: Path) -> None:
    """Record the warm start, or check that this machine built the recorded one."""
    path, sha, rec = records / WARM_FILE, warm_weights_sha256(warm), read_warm(records)
    if rec is None:
        records.mkdir(parents=True, exist_ok=True)
        record = WarmRecord(setting, kernels, sha, cpu_name())
        put_atomic(pafs.LocalFileSystem(), str(path), (json.dumps(asdict(record), indent=1) + "\n").encode())
        return
    if rec.weights_sha256 != sha:
        raise SystemExit(f"{path}: recorded warm-start weights {rec.weights_sha256[:16]} (made on {rec.cpu}), "
                         f"this machine ({cpu_name()}) made {sha[:16]}: its runs would not pair with the "
                         f"recorded ones; use another --records folder")


def describe(records: Path) -> str:
    """One line naming what the recorded runs started from."""
    rec = read_warm(records)
    if rec is None:
        return f"Records: {records.name}/ holds no warm start yet."
    kernels = " ".join(f"{k}={v}" for k, v in rec.kernels.items()) or "native"
    return (f"Records: {records.name}/, warm start {rec.weights_sha256[:16]} (setting {rec.setting_hash}, "
            f"kernels {kernels}), first made on {rec.cpu}.")


def keep(run_dir: Path, records: Path) -> None:
    """Copy a finished run's metrics into the records."""
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    put_atomic(pafs.LocalFileSystem(), str(record_path(records, run_dir.name)), metrics)


def metrics_file(out: Path, records: Path | None, name: str) -> Path:
    """Where run ``name``'s metrics are read: its record if there is one, else its run directory."""
    recorded = record_path(records, name) if records else None
    return recorded if recorded and recorded.exists() else out / name / "metrics.jsonl"

