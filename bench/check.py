"""Metric regression gate: compare a sweep with a committed baseline.

A baseline file (CSV) holds, per (suite, fidelity, target, algorithm, metric), the mean, standard deviation
and number of seeds of a reference sweep, and the direction in which the metric is better. ``check`` runs
the same cells (or reads a results folder) and flags a regression when a metric's mean over seeds is worse
than the baseline mean by more than the tolerance

    tol = max(K_STD * std_baseline, REL * |mean_baseline|, ABS_FLOOR)

(the seed spread recorded in the baseline sets the band; the floors keep a single-seed or zero-spread
baseline from flagging floating-point noise), or when a cell that finished in the baseline now fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench import tables
from bench.errors import BenchError
from bench.store import atomic_write_csv, read_table

K_STD, REL, ABS_FLOOR = 4.0, 0.25, 1e-3

#: metrics checked and their better direction (-1: lower is better, +1: higher is better)
DIRECTION = {
    "ebm_weight_mse": -1, "neg_weight_mse": -1, "logp_median_sq_error": -1, "kl": -1, "max_rhat": -1,
    "test_loglik": +1, "min_ess_bulk": +1, "min_ess_tail": +1,
}
DIRECTION_PATTERNS = [(re.compile(r"param_error\[.*\]"), -1)]
BASELINE_COLUMNS = ["suite", "fidelity", "target", "algorithm", "metric", "mean", "std", "n_seeds", "direction",
                    "n_ok", "n_runs"]


def direction(metric: str) -> int:
    if metric in DIRECTION:
        return DIRECTION[metric]
    return next((d for pat, d in DIRECTION_PATTERNS if pat.fullmatch(metric)), 0)


def make_baseline(results: pd.DataFrame) -> pd.DataFrame:
    s = tables.summary(results)
    s = s.assign(direction=s["metric"].map(direction))
    s = s[s["direction"] != 0]
    runs = results.drop_duplicates(["suite", "fidelity", "target", "algorithm", "seed"])
    counts = runs.groupby(["suite", "fidelity", "target", "algorithm"]).agg(
        n_ok=("status", lambda x: int((x == "ok").sum())), n_runs=("status", "size")).reset_index()
    return s.merge(counts, on=["suite", "fidelity", "target", "algorithm"])[BASELINE_COLUMNS]


def write_baseline(results: pd.DataFrame, path: Path) -> pd.DataFrame:
    base = make_baseline(results)
    if base.empty:
        raise BenchError("no finished runs with checkable metrics to make a baseline from")
    atomic_write_csv(Path(path), base)
    return base


def read_baseline(path: Path) -> pd.DataFrame:
    return read_table(Path(path), required=BASELINE_COLUMNS)


def compare(results: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """One row per baseline entry: measured mean, tolerance, and whether it regressed."""
    keys = ["suite", "fidelity", "target", "algorithm", "metric"]
    now = tables.summary(results)[[*keys, "mean", "n_seeds"]]
    runs = results.drop_duplicates(["suite", "fidelity", "target", "algorithm", "seed"])
    ok_now = runs.groupby(["suite", "fidelity", "target", "algorithm"])["status"].apply(
        lambda x: int((x == "ok").sum())).rename("n_ok_now").reset_index()
    cmp = baseline.merge(now, on=keys, how="left", suffixes=("_base", "")).merge(
        ok_now, on=["suite", "fidelity", "target", "algorithm"], how="left")
    std = cmp["std"].fillna(0.0)
    cmp["tolerance"] = np.maximum.reduce([K_STD * std, REL * cmp["mean_base"].abs(),
                                          np.full(len(cmp), ABS_FLOOR)])
    worse = (cmp["mean"] - cmp["mean_base"]) * -cmp["direction"]  # > 0: worse
    cmp["worse_by"] = worse
    failed_now = cmp["n_ok_now"].fillna(0) < cmp["n_ok"]
    missing = cmp["mean"].isna()
    cmp["verdict"] = np.where(failed_now, "REGRESSION (runs failed)",
                     np.where(missing, "REGRESSION (metric missing)",
                     np.where(worse > cmp["tolerance"], "REGRESSION", "ok")))
    return cmp[[*keys, "mean_base", "mean", "tolerance", "worse_by", "verdict"]]


def render(cmp: pd.DataFrame) -> str:
    bad = cmp[cmp["verdict"] != "ok"]
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.4g}".format):
        head = f"{len(cmp)} metrics checked against the baseline: {len(bad)} regression(s)"
        body = bad.to_string(index=False) if len(bad) else "(none)"
    return f"{head}\n{body}\n"
