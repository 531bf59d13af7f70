"""Result store: long-format tables written atomically.

One row per (run, metric). A run is a cell (suite, target, algorithm, fidelity, seed); its rows carry
the config, code version, wall time and work counts. Files are replaced with os.replace after being
fully written to a temporary file in the same folder, so a killed run never leaves a corrupt file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench._ownpkg import ROOT
from bench.errors import BenchError

RESULTS = "results.csv"
TRACES = "traces.csv"
KEY = ["suite", "target", "algorithm", "fidelity", "seed"]


def code_version() -> str:
    """git commit of this checkout; with uncommitted changes to tracked files, '-dirty.' and a hash of the
    diff (so a cached cell is recomputed when the code changes); outside git, the package version."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, timeout=30).stdout
        return rev + (f"-dirty.{hashlib.sha1(diff).hexdigest()[:8]}" if diff.strip() else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "v" + version("ebm-bench")
        except PackageNotFoundError:
            return "unknown"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def atomic_write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_table(path: Path, required=KEY) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise BenchError(f"{path}: no such file (run 'python -m bench run' first)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: not a readable results table ({str(e).splitlines()[0]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise BenchError(f"{path}: not a results table (missing columns: {', '.join(missing)})")
    return df


class ResultStore:
    """The results folder of a sweep: results.csv, traces.csv and per-cell artifacts."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def _merge(self, name: str, new: pd.DataFrame) -> None:
        path = self.out / name
        if path.exists():
            old = read_table(path)
            cells = new[KEY].drop_duplicates()
            keep = old.merge(cells.assign(_new=1), on=KEY, how="left")
            old = keep[keep["_new"].isna()].drop(columns="_new")
            new = pd.concat([old, new], ignore_index=True)
        atomic_write_csv(path, new)

    def add(self, rows: list[dict], traces: list[dict], artifacts: dict, cell: dict) -> None:
        """Record one finished cell; rows of an earlier run of the same cell are replaced."""
        if artifacts:
            atomic_write_npz(self.artifact_path(cell), **artifacts)
        if traces:
            self._merge(TRACES, pd.DataFrame(traces))
        self._merge(RESULTS, pd.DataFrame(rows))

    def artifact_path(self, cell: dict) -> Path:
        return self.out / "cells" / "{suite}-{fidelity}-{target}-{algorithm}-seed{seed}.npz".format(**cell)

    def results(self) -> pd.DataFrame:
        return read_table(self.out / RESULTS)

    def finished_ids(self) -> set[str]:
        """cell_ids of the cells already recorded (any outcome: ok, diverged, timeout)."""
        path = self.out / RESULTS
        if not path.exists():
            return set()
        res = read_table(path)
        return set(res["cell_id"].dropna()) if "cell_id" in res.columns else set()

    def traces(self) -> pd.DataFrame:
        path = self.out / TRACES
        return read_table(path) if path.exists() else pd.DataFrame(columns=[*KEY, "iteration", "metric", "value"])


def config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True)
