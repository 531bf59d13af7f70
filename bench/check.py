"""Metric regression gate: compare a sweep with a committed baseline.

``bench baseline`` runs (or reads) a sweep of one suite at one fidelity and writes, per (target, algorithm,
metric), the metric's statistics over seeds; ``bench check`` re-runs the same cells with the same seeds and
exits 1 when a metric got worse by more than its tolerance, when a run that finished in the baseline now
fails, or when a model that was proper in the baseline now leaks mass out of the evaluation box.

The statistic. EBM metrics are heavy-tailed across seeds: one seed's KL can be 100 times another's, and a
mean with a standard-deviation band on the raw scale tolerates almost anything. Each checked metric
therefore has a ``Rule``: its better direction and the scale it is compared on,

- ``log``: z = log(max(x - lower, 0) + floor) for positive, multiplicatively noisy errors (KL, weight MSEs,
  log-density error, parameter errors, R-hat - 1, ESS). ``floor`` is the resolution below which differences
  do not matter (e.g. 1e-5 for a weight MSE, 0.01 for R-hat - 1), so two near-perfect values are not
  "10 times apart". Differences of z are log-ratios: a tolerance of log(3) means "3 times worse".
- ``linear``: z = x, for metrics in natural units that can be negative (test log-likelihood, nats).

On that scale the baseline stores the mean and standard deviation of z over its n_b seeds; the check
computes the mean over its n seeds and flags a regression when

    (mean_now - mean_base) * (-direction) > tol,
    tol = clip(K_STD * s_pooled * sqrt(1/n_b + 1/n), rule.min_tol, rule.cap)

(s_pooled: the seed standard deviation of z pooled over baseline and check, a two-sample t statistic's
denominator; K_STD = 4 keeps the chance that seed noise alone trips one metric below about 0.4 % at
4 + 4 seeds). ``cap`` bounds the tolerance: a log-scale metric 3 times worse than its baseline, or a test
log-likelihood 0.5 nats worse, is always a regression. A metric whose own baseline spread cannot resolve its
cap (K_STD * s_base * sqrt(2 / n_b) > cap: the seeds disagree by more than the gate can tolerate) cannot be
compared by its mean; it is checked on a robust scale instead, against the range of its baseline seeds: a
regression when the new mean is worse than the baseline's worst seed by more than the cap (``check`` =
"range"; a 1e6 times larger KL is caught, seed noise is not). Not checked at all (``check`` = "none"): a
density metric of a cell whose baseline had an improper model (mass leaking out of the evaluation box: its KL
or log-likelihood is not a density's), and a metric of a cell with fewer than MIN_SEEDS finished seeds. The
baseline file says which check each metric gets and why (``check``, ``reason``); ``bench check`` prints the
count per reason. Metrics without a rule (per-mode weights, work counts, the R-hat of
deterministic chains, which measures no mixing) are not checked. The rules are the metrics' own declarations
(metrics/catalogue.py: ``better`` and ``gate``), so a plug-in metric with a gate is checked like a built-in.

Seeds: ``bench baseline`` uses BASELINE_SEEDS = 4 seeds unless told otherwise and refuses fewer than
MIN_SEEDS = 3 (two seeds give a standard deviation with one degree of freedom: a tolerance that is noise
itself). CI re-runs the baseline's cells with the same seeds: 8 algorithms x 4 targets x 4 seeds of the toy2d
quick suite is about half an hour on 2 cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import tables
from bench.errors import BenchError
from bench.store import atomic_write_csv, read_table
from metrics.catalogue import METRICS, declaration

K_STD = 4.0
BASELINE_SEEDS = 4
MIN_SEEDS = 3
#: a log-scale metric is always a regression when CAP_FACTOR times worse, never when less than MIN_FACTOR
CAP_FACTOR, MIN_FACTOR = 3.0, 1.25


@dataclass(frozen=True)
class Rule:
    """How one metric is compared: direction (-1 lower is better, +1 higher), scale ("log" or "linear"),
    for log: z = log(max(x - lower, 0) + floor); tolerance bounds on z. Made from a metric's declaration
    (``better`` and ``gate``, metrics/catalogue.py)."""

    direction: int
    scale: str = "log"
    lower: float = 0.0
    floor: float = 0.0
    min_tol: float = math.log(MIN_FACTOR)
    cap: float = math.log(CAP_FACTOR)

    def transform(self, x):
        x = np.asarray(x, dtype=float)
        if self.scale == "linear":
            return x
        return np.log(np.maximum(x - self.lower, 0.0) + self.floor)


def _rule_of(m) -> Rule:
    g = m.gate
    return Rule(m.better, g.scale, g.lower, g.floor, Rule.min_tol if g.min_tol is None else g.min_tol,
                Rule.cap if g.cap is None else g.cap)


def rules() -> dict[str, Rule]:
    """The metrics checked, by declared name (a pattern, e.g. ``param_error[name]``, stands for its instances):
    every registered metric whose declaration has a ``gate``."""
    return {m.name: _rule_of(m) for m in METRICS.values() if m.gate is not None}

BASELINE_COLUMNS = ["suite", "fidelity", "target", "algorithm", "metric", "direction", "scale", "n_seeds", "mean",
                    "std", "z_mean", "z_std", "z_worst", "check", "reason", "n_ok", "n_runs", "n_improper"]
CELL = ["suite", "fidelity", "target", "algorithm"]


def rule(metric: str) -> Rule | None:
    m = declaration(metric)
    return _rule_of(m) if m is not None and m.gate is not None else None


def direction(metric: str) -> int:
    r = rule(metric)
    return r.direction if r else 0


def _cell_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Per cell: runs, finished runs and runs whose model is improper (``improper`` = 1; 0 in older results)."""
    runs = results.drop_duplicates([*CELL, "seed"])
    counts = runs.groupby(CELL)["status"].agg(n_runs="size", n_ok=lambda x: int((x == "ok").sum()))
    imp = tables.improper_seeds(results)
    n_imp = imp[imp].reset_index().groupby(CELL).size().rename("n_improper") if len(imp) else None
    out = counts.join(n_imp) if n_imp is not None else counts.assign(n_improper=0)
    return out.fillna({"n_improper": 0}).astype({"n_improper": int}).reset_index()


def _z_stats(results: pd.DataFrame) -> pd.DataFrame:
    """Per cell and ruled metric: n, mean and std of the raw values and of z over finished seeds."""
    ok = tables.ok_rows(results)
    ruled = {m: r for m in ok["metric"].unique() if (r := rule(m)) is not None}
    ok = ok[ok["metric"].isin(ruled)]
    if ok.empty:
        return pd.DataFrame(columns=[*CELL, "metric", "n_seeds", "mean", "std", "z_mean", "z_std", "z_worst"])
    ok = ok[np.isfinite(ok["value"].astype(float))]
    ok = ok.assign(z=[float(ruled[m].transform(v)) for m, v in zip(ok["metric"], ok["value"], strict=True)])
    g = ok.groupby([*CELL, "metric"])
    out = g.agg(n_seeds=("value", "count"), mean=("value", "mean"), std=("value", "std"),
                z_mean=("z", "mean"), z_std=("z", "std"), z_min=("z", "min"), z_max=("z", "max")).reset_index()
    # the worst seed: the largest z where lower is better, the smallest where higher is better
    lower_better = out["metric"].map(direction) < 0
    return out.assign(z_worst=out["z_max"].where(lower_better, out["z_min"])).drop(columns=["z_min", "z_max"])


def make_baseline(results: pd.DataFrame) -> pd.DataFrame:
    s = _z_stats(results).merge(_cell_counts(results), on=CELL)
    s["direction"] = s["metric"].map(direction)
    s["scale"] = s["metric"].map(lambda m: rule(m).scale)
    how, reason = [], []
    for r in s.itertuples():
        ru = rule(r.metric)
        spread = K_STD * r.z_std * math.sqrt(2 / r.n_seeds) if r.n_seeds >= 2 else math.inf
        if r.n_improper > 0 and tables.is_density_metric(r.metric):
            h, why = "none", f"improper model in {r.n_improper} of {r.n_runs} seeds: not a density"
        elif r.n_seeds < MIN_SEEDS:
            h, why = "none", f"{r.n_seeds} finished seeds, fewer than {MIN_SEEDS}"
        elif spread > ru.cap:
            what = f"x{math.exp(spread):.3g}" if ru.scale == "log" else f"{spread:.3g}"
            cap = f"x{math.exp(ru.cap):.3g}" if ru.scale == "log" else f"{ru.cap:.3g}"
            h, why = "range", f"seed spread too large for the mean (tolerance {what} > cap {cap})"
        else:
            h, why = "mean", ""
        how.append(h)
        reason.append(why)
    s["check"], s["reason"] = how, reason
    return s[BASELINE_COLUMNS]


def check_rows(results: pd.DataFrame, suite: str, fidelity: str, where: str) -> pd.DataFrame:
    """The rows of one suite and fidelity; any other row is refused (a baseline is one suite at one fidelity)."""
    other = results[(results["suite"] != suite) | (results["fidelity"] != fidelity)]
    if len(other):
        found = ", ".join(sorted({f"{a}/{b}" for a, b in zip(other["suite"], other["fidelity"], strict=True)}))
        raise BenchError(f"{where}: holds rows of {found}, not only {suite}/{fidelity}: a baseline is one suite at "
                         "one fidelity")
    return results


def write_baseline(results: pd.DataFrame, path: Path) -> pd.DataFrame:
    base = make_baseline(results)
    if (base["check"] == "none").all():
        raise BenchError("no finished runs with gateable metrics to make a baseline from "
                         f"(need at least {MIN_SEEDS} finished seeds per cell)")
    atomic_write_csv(Path(path), base)
    return base


def read_baseline(path: Path) -> pd.DataFrame:
    df = read_table(Path(path), required=["suite", "fidelity", "metric"])
    missing = [c for c in BASELINE_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{path}: not a baseline of this version (missing columns: {', '.join(missing)}); "
                         "make a new one with 'python -m bench baseline'")
    return df.assign(reason=df["reason"].astype(object).where(df["reason"].notna(), ""))


def compare(results: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """One row per baseline entry: baseline and measured mean (raw), the difference on the rule's scale
    (``worse_by``, > 0: worse), the tolerance, and the verdict ("not checked: ..." for excluded metrics).
    ``worse_by`` is measured from the baseline mean (check "mean") or from its worst seed (check "range")."""
    keys = [*CELL, "metric"]
    now = _z_stats(results)[[*keys, "n_seeds", "mean", "z_mean", "z_std"]]
    cmp = baseline.merge(now, on=keys, how="left", suffixes=("_base", ""))
    cmp = cmp.merge(_cell_counts(results)[[*CELL, "n_ok", "n_improper"]], on=CELL, how="left",
                    suffixes=("", "_now"))
    nb, nn = cmp["n_seeds_base"].astype(float), cmp["n_seeds"].fillna(0).astype(float)
    sb, sn = cmp["z_std_base"].fillna(0.0), cmp["z_std"].fillna(0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = (nb - 1).clip(lower=0) + (nn - 1).clip(lower=0)
        pooled = np.sqrt(((nb - 1).clip(lower=0) * sb**2 + (nn - 1).clip(lower=0) * sn**2) / dof)
        pooled = pooled.where(dof > 0, sb)
        raw_tol = K_STD * pooled * np.sqrt(1 / nb + 1 / nn.clip(lower=1))
    lo = cmp["metric"].map(lambda m: rule(m).min_tol)
    hi = cmp["metric"].map(lambda m: rule(m).cap)
    by_range = cmp["check"] == "range"
    # mean: the capped two-sample tolerance around the baseline mean; range: the cap beyond the worst seed
    cmp["tolerance"] = np.where(by_range, hi, np.minimum(np.maximum(raw_tol, lo), hi))
    cmp["worse_by"] = (cmp["z_mean"] - cmp["z_worst"].where(by_range, cmp["z_mean_base"])) * -cmp["direction"]
    failed = cmp["n_ok_now"].fillna(0) < cmp["n_ok"]
    improper = (cmp["n_improper_now"].fillna(0) > cmp["n_improper"]) & cmp["metric"].map(tables.is_density_metric)
    missing = cmp["z_mean"].isna()
    unchecked = cmp["check"] == "none"
    beyond = cmp["worse_by"] > cmp["tolerance"]
    cmp["verdict"] = np.select(
        [failed, improper, unchecked, missing, beyond & by_range, beyond],
        ["REGRESSION (runs failed)", "REGRESSION (model became improper)", "not checked: " + cmp["reason"],
         "REGRESSION (metric missing)", "REGRESSION (beyond the baseline's worst seed)", "REGRESSION"], "ok")
    return cmp[[*keys, "check", "scale", "mean_base", "mean", "worse_by", "tolerance", "verdict", "reason"]]


def regressions(cmp: pd.DataFrame) -> pd.DataFrame:
    return cmp[cmp["verdict"].str.startswith("REGRESSION")]


def render(cmp: pd.DataFrame) -> str:
    bad = regressions(cmp)
    n = cmp["check"].value_counts()
    head = (f"{len(cmp) - n.get('none', 0)} metrics checked against the baseline ({n.get('mean', 0)} by their mean, "
            f"{n.get('range', 0)} by the range of the baseline's seeds): {len(bad)} regression(s).\n"
            "worse_by and tolerance are on each metric's scale (log: log-ratio, log(3) = 1.1 is 3 times worse; "
            "linear: the metric's units).")
    with pd.option_context("display.width", 120, "display.max_rows", 500, "display.max_colwidth", 40,
                           "display.float_format", "{:.4g}".format):
        body = bad.drop(columns=["suite", "fidelity", "reason"]).to_string(index=False, line_width=120) \
            if len(bad) else "(none)"
    lines = [head, body]
    for how, title in (("range", "checked by range"), ("none", "not checked")):
        part = cmp[cmp["check"] == how]
        if len(part):
            why = part["reason"].str.replace(r"\d+ of \d+ seeds", "k of n seeds", regex=True)
            why = why.str.replace(r" \(tolerance .*", "", regex=True)
            lines.append(f"{len(part)} metrics {title}:")
            lines += [f"  {k:4d}  {w}" for w, k in why.value_counts().items()]
    return "\n".join(lines) + "\n"
