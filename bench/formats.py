"""Results other tools read: Parquet copies of results.csv and traces.csv, and the environment of a sweep.

``results.parquet`` and ``traces.parquet`` hold the same long-format rows as the CSV files, with fixed column
types for the columns below and the schema version in the file's metadata (key ``ebm_bench.schema_version``),
so that pandas, polars or DuckDB read a sweep directly, e.g.
``duckdb.sql("select * from 'results/*/results.parquet'")``. Schema version 1:

- results: suite, target, algorithm, fidelity (string), seed (int64), metric (string), value (float64), status,
  reason (string), cell_id, target_version, code_version, torch_version, device, finished_at, config (string,
  the full config as JSON), settings, deviations (string, a JSON list), protocol (string, JSON; FID / KID / IS
  rows), resumed_at (string: the iterations a run resumed at from its checkpoints, space-separated; absent or
  empty for a run never stopped), n_iters, grad_evals, energy_evals, flow_passes (int64), train_time_s,
  wall_time_s, time_per_iter_s, cpu_time_s (float64; cpu_time_s is absent from older results); further columns
  as pandas infers them.
- traces: suite, target, algorithm, fidelity (string), seed, iteration, grad_evals (int64), metric (string),
  value (float64).

``environment.json`` records where a sweep ran: Python, platform, CPU model and count, torch's build (CUDA,
cuDNN), the GPU of a CUDA device, and the versions of the packages the results depend on.
"""

from __future__ import annotations

import io
import json
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import pandas as pd

SCHEMA_VERSION = "1"
SCHEMA_KEY = b"ebm_bench.schema_version"

_STR = ["suite", "target", "algorithm", "fidelity", "metric", "status", "reason", "cell_id", "target_version",
        "code_version", "torch_version", "device", "finished_at", "config", "settings", "deviations", "protocol",
        "resumed_at"]
#: the text columns: read from CSV as text, never as numbers, since any of them may look like one: a resume list
#: ("5", "4000 9000"), a target version ("1"), a hexadecimal code version or cell id that pandas would read as a
#: number ("276357e72495" is the float 276357e72495 = inf, "1234567890123456" an integer, "0012..." loses its zeros)
TEXT_COLUMNS = list(_STR)
_INT = ["seed", "n_iters", "grad_evals", "energy_evals", "flow_passes", "iteration"]
_FLOAT = ["value", "train_time_s", "wall_time_s", "time_per_iter_s", "cpu_time_s"]

#: the distributions whose versions the environment record names (and any plug-in package's)
PACKAGES = ["ebm-bench", "torch", "numpy", "pandas", "scipy", "arviz-stats", "arviz-base", "xarray", "joblib",
            "torchdiffeq", "matplotlib", "seaborn", "pyarrow", "tqdm"]


def arrow_table(df: pd.DataFrame):
    """The rows as a pyarrow Table with schema-version-1 column types and the schema version in its metadata."""
    import pyarrow as pa

    df = df.copy()
    for c in df.columns:
        if c in _STR:
            df[c] = df[c].astype(object).where(df[c].notna(), None).map(lambda v: v if v is None else str(v))
        elif c in _INT and df[c].notna().all():
            df[c] = df[c].astype("int64")
        elif c in _FLOAT:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    types = {c: pa.string() for c in _STR} | {c: pa.float64() for c in _FLOAT}
    schema = pa.Schema.from_pandas(df, preserve_index=False)
    schema = pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in schema])
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), SCHEMA_KEY: SCHEMA_VERSION.encode()})


def parquet_bytes(df: pd.DataFrame) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(arrow_table(df), buf)
    return buf.getvalue()


def schema_version(path) -> str | None:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    v = meta.get(SCHEMA_KEY)
    return v.decode() if v is not None else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions(names) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            pass
    return out


def environment(device: str = "cpu", code_version: str = "", origins=()) -> dict:
    """Where a sweep runs: interpreter, OS, CPU, torch build, GPU (for a CUDA device) and package versions, with
    the code version and the versions of the packages whose entry points gave plug-ins (``origins``: where each
    registered entry came from, bench.registry.ORIGINS' values)."""
    import torch

    plugin_dists = sorted({src.split("entry point of ", 1)[1].rsplit(" ", 1)[0]
                           for src in origins if src.startswith("entry point of ")})
    env = {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                  "git": getattr(torch.version, "git_version", None)},
        "device": device,
        "gpu": None,
        "packages": _versions(PACKAGES + plugin_dists),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        env["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}"}
    return env


def environment_json(previous: bytes | None, env: dict) -> bytes:
    """environment.json: the distinct environments the folder's cells ran in, newest last (a sweep resumed on
    another machine lists both)."""
    try:
        envs = json.loads(previous) if previous else []
        envs = envs if isinstance(envs, list) else []
    except ValueError:
        envs = []
    same = [e for e in envs if {k: v for k, v in e.items() if k != "recorded_at"}
            == {k: v for k, v in env.items() if k != "recorded_at"}]
    if not same:
        envs.append(env)
    return json.dumps(envs, indent=1, sort_keys=True).encode()
