"""Result store: long-format tables written atomically.

One row per (run, metric). A run is a cell (suite, target, algorithm, fidelity, seed); its rows carry
the config, code version, wall time and work counts. Files are replaced with os.replace after being
fully written to a temporary file in the same folder, so a killed run never leaves a corrupt file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench import plugins
from bench._ownpkg import ROOT
from bench.errors import BenchError
from bench.formats import TEXT_COLUMNS, environment, environment_json, parquet_bytes
from bench.registry import ORIGINS
from bench.stopping import signals_deferred

RESULTS = "results.csv"
TRACES = "traces.csv"
#: the suite-file plug-ins (module:Class and folder) the cells of this folder used, so that reading it finds them
PLUGINS = "plugins.json"
#: suite name -> the suite file it was read from
SUITES = "suites.json"
#: the environments (packages, torch build, CPU / GPU) the cells ran in
ENVIRONMENT = "environment.json"
KEY = ["suite", "target", "algorithm", "fidelity", "seed"]


def code_version() -> str:
    """git commit of this checkout; with uncommitted changes to tracked files, '-dirty.' and a hash of the
    diff (so a cached cell is recomputed when the code changes); outside a git checkout of this project (an
    installed package), the package version."""
    try:
        if not (ROOT / ".git").exists():  # not the commit of whatever repository holds site-packages
            raise OSError("not a git checkout")
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
    """Write ``path`` whole or not at all: a temporary file in the same folder, fsynced, then renamed over it.
    The temporary's name carries the writer's process id, so that a temporary left by a writer that was killed
    (SIGKILL cannot be caught) is recognised and removed later (``remove_stale_temporaries``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries of ``atomic_write_bytes`` under ``folder`` whose writer no longer runs (a killed
    sweep); a live writer's temporaries are left alone. Returns the removed paths."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        pid = tmp.name.rsplit(".", 3)[-3] if tmp.name.count(".") >= 4 else ""
        # ".<name>.<pid>.<random>.tmp": the pid is the field before mkstemp's random part
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def atomic_write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def check_writable(folder: Path, what: str = "") -> None:
    """Fail now, before any compute, if ``folder`` cannot be created and written; leaves nothing behind
    (folders it had to create for the test are removed again)."""
    folder = Path(folder)
    name = f"{what} {folder}" if what else str(folder)
    if folder.exists() and not folder.is_dir():
        raise BenchError(f"{name}: exists and is not a folder")
    created, p = [], folder
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        for d in reversed(created):
            d.mkdir()
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BenchError(f"{name}: cannot write there ({e.strerror or e})") from None
    finally:
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()


def save_outputs(files: dict[Path, bytes]) -> OSError | None:
    """Write derived outputs (tables, figures), each atomically; returns the error instead of raising it, so
    that a read-only or full results folder still lets the caller show what it computed."""
    try:
        for path, data in files.items():
            atomic_write_bytes(path, data)
    except OSError as e:
        return e
    return None


def read_artifact(path: Path) -> dict:
    """The arrays of a cell's .npz artifact; a truncated or corrupt file is a one-line BenchError naming it."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BenchError(f"{path}: corrupt cell artifact ({str(e).splitlines()[0] or type(e).__name__}); "
                         "re-run its cell with --force") from None


def read_table(path: Path, required=KEY) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS})
    except FileNotFoundError:
        raise BenchError(f"{path}: no such file (run 'python -m bench run' first)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise BenchError(f"{path}: not a readable results table ({str(e).splitlines()[0]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise BenchError(f"{path}: not a results table (missing columns: {', '.join(missing)})")
    return df


class ResultStore:
    """The results folder of a sweep: results.csv, traces.csv and per-cell artifacts."""

    def __init__(self, out: Path):
        self.out = Path(out)
        if self.out.is_dir():  # what a killed earlier run of this sweep left half-written
            remove_stale_temporaries(self.out)

    def _merge(self, name: str, new: pd.DataFrame) -> None:
        path = self.out / name
        if path.exists():
            old = read_table(path)
            cells = new[KEY].drop_duplicates()
            keep = old.merge(cells.assign(_new=1), on=KEY, how="left")
            old = keep[keep["_new"].isna()].drop(columns="_new")
            new = pd.concat([old, new], ignore_index=True)
        # the same rows as Parquet (typed columns, schema version in its metadata) for pandas, polars, DuckDB;
        # written first, so that the CSV (whose results rows mark a cell finished) is still written last
        atomic_write_bytes(path.with_suffix(".parquet"), parquet_bytes(new))
        atomic_write_csv(path, new)

    def add(self, rows: list[dict], traces: list[dict], artifacts: dict, cell: dict) -> None:
        """Record one finished cell; rows of an earlier run of the same cell are replaced. A stop signal
        (Ctrl-C, SIGTERM, SIGHUP) waits until the cell is written; its rows (written last) mark it finished."""
        npz = self.artifact_path(cell)
        new_npz = bool(artifacts) and not npz.exists()
        with signals_deferred():
            try:
                if artifacts:
                    atomic_write_npz(npz, **artifacts)
                if traces:
                    self._merge(TRACES, pd.DataFrame(traces))
                self._merge(RESULTS, pd.DataFrame(rows))
            except OSError:  # e.g. the disk filled up: no artifact of a cell that has no rows
                if new_npz:
                    npz.unlink(missing_ok=True)
                raise

    def artifact_path(self, cell: dict) -> Path:
        return self.out / "cells" / "{suite}-{fidelity}-{target}-{algorithm}-seed{seed}.npz".format(**cell)

    def artifact(self, cell: dict) -> dict | None:
        """The arrays saved with a cell, or None if it has none."""
        path = self.artifact_path(cell)
        return read_artifact(path) if path.exists() else None

    def record_plugins(self, specs: dict) -> None:
        """Add the suite-file plug-ins of a sweep to the folder's record of them (see ``activate_plugins``)."""
        if not specs:
            return
        known = self.plugin_specs()
        for kind, entries in specs.items():
            known.setdefault(kind, {}).update(entries)
        atomic_write_bytes(self.out / PLUGINS, json.dumps(known, indent=1, sort_keys=True).encode())

    def record_environment(self, device: str = "cpu") -> None:
        """Add the environment this process runs cells in to environment.json (see ``bench.formats``)."""
        path = self.out / ENVIRONMENT
        previous = path.read_bytes() if path.exists() else None
        env = environment(device, code_version(), ORIGINS.values())
        atomic_write_bytes(path, environment_json(previous, env))

    def record_suite(self, name: str, path: str) -> None:
        """Remember which suite file a suite name of this folder came from (for its reference algorithm)."""
        known = self.suite_files()
        if known.get(name) != str(path):
            atomic_write_bytes(self.out / SUITES, json.dumps({**known, name: str(path)}, indent=1).encode())

    def suite_files(self) -> dict[str, str]:
        try:
            return json.loads((self.out / SUITES).read_text())
        except (OSError, ValueError):
            return {}

    def plugin_specs(self) -> dict:
        path = self.out / PLUGINS
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"{path}: not a readable plug-in record ({e})") from None

    def activate_plugins(self) -> None:
        """Register the plug-ins this folder's cells used (installed entry points and recorded suite-file
        plug-ins), so that its targets and algorithms are known to the tables and plots."""
        plugins.load_entry_points()
        plugins.register_specs(self.plugin_specs(), str(self.out / PLUGINS))

    def results(self) -> pd.DataFrame:
        """results.csv, checked: the columns every reader needs, numbers in ``value``, targets this code
        knows; a row repeated for the same run and metric counts once (the last one)."""
        self.activate_plugins()
        return check_results(read_table(self.out / RESULTS, required=RESULT_COLUMNS), self.out / RESULTS)

    def finished_ids(self) -> set[str]:
        """cell_ids of the cells already recorded (any outcome: ok, diverged, timeout)."""
        return set(self.finished())

    def finished(self) -> dict[str, str]:
        """cell_id -> code version of the cells already recorded (a folder resumed on later code has several
        code versions)."""
        if not (self.out / RESULTS).exists():
            return {}
        res = self.results()
        if "cell_id" not in res.columns:
            return {}
        version = res["code_version"] if "code_version" in res.columns else pd.Series("", index=res.index)
        runs = pd.DataFrame({"id": res["cell_id"], "v": version.fillna("").astype(str)}).dropna()
        return dict(zip(runs["id"], runs["v"], strict=True))

    def traces(self) -> pd.DataFrame:
        path = self.out / TRACES
        return read_table(path) if path.exists() else pd.DataFrame(columns=[*KEY, "iteration", "metric", "value"])


RESULT_COLUMNS = [*KEY, "metric", "value", "status"]


def check_results(res: pd.DataFrame, path: Path) -> pd.DataFrame:
    import datasets

    value = pd.to_numeric(res["value"], errors="coerce")
    bad = value.isna() & res["value"].notna()
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise BenchError(f"{path}: line {i + 2}: value {res['value'].iloc[i]!r} is not a number")
    unknown = sorted(set(res["target"].astype(str)) - set(datasets.TARGETS))
    if unknown:
        raise BenchError(f"{path}: unknown target {unknown[0]!r} (results of another version of the code?); "
                         f"known: {', '.join(sorted(datasets.TARGETS))}")
    seed = pd.to_numeric(res["seed"], errors="coerce")
    bad = seed.isna() | (seed != seed.round())
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise BenchError(f"{path}: line {i + 2}: seed {res['seed'].iloc[i]!r} is not an integer")
    res = res.assign(value=value, seed=seed.astype(int))
    return res.drop_duplicates([*KEY, "metric"], keep="last").reset_index(drop=True)


def config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True)
