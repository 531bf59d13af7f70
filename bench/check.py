"""Metric regression gate: compare a sweep with a committed baseline.

``bench baseline`` runs (or reads) a sweep of one suite at one fidelity and writes, per (target, algorithm,
metric), the metric's statistics over seeds; ``bench check`` re-runs the first CHECK_SEEDS of those seeds and
exits 1 when a metric got worse by more than its tolerance, when a value that was finite in every baseline
seed is not finite now, when a run that finished in every baseline seed now fails, or when a model that was
proper in every baseline seed now leaks mass out of the evaluation box.

The scale. EBM metrics are heavy-tailed across seeds: one seed's KL can be 100 times another's. Each checked
metric therefore has a ``Rule``: its better direction and the scale it is compared on,

- ``log``: z = log(max(x - lower, 0) + floor) for positive, multiplicatively noisy errors (KL, weight MSEs,
  log-density error, parameter errors, R-hat - 1, ESS). ``floor`` is the resolution below which differences
  do not matter (e.g. 1e-5 for a weight MSE, 0.01 for R-hat - 1), so two near-perfect values are not
  "10 times apart". Differences of z are log-ratios: log(3) = 1.1 is "3 times worse".
- ``linear``: z = x, for metrics in natural units that can be negative (test log-likelihood, nats).

The test. The gate is one run of many tests (one per metric and cell, about 250 on toy2d quick), and a gate
that cries wolf is ignored: its false-alarm rate is controlled per run, not per metric. The baseline has
BASELINE_SEEDS = 8 seeds (0-7): the first CHECK_SEEDS = 4 are the ones ``bench check`` re-runs, the others
are there to estimate the seed spread. Per metric it stores the mean m_b and the standard deviation s_b of z
over its n_b seeds. ``check`` computes the mean of z over its n seeds and flags a regression when

    (mean_now - m_b) * (-direction) > tol,
    tol = max(t_{n_b - 1}(1 - ALPHA / M) * s_b * sqrt(1/n_b + 1/n), rule.min_tol)

a one-sided two-sample Student t test on the baseline's own spread (exact for normal z whose seed spread did
not change), Bonferroni-corrected over the M metrics the gate checks in one run, so that a run whose code is
unchanged but whose random stream is new (other seeds, a reordered draw) raises a false alarm on any metric
with probability at most ALPHA = 0.05 when z is normal. Measured on seeds (``false_alarms``): ``bench
baseline`` splits its own seeds into a baseline half and a check half every possible way and prints the
fraction of splits that raise any alarm. The spread comes from the baseline alone, so a regression that also
scatters the seeds does not widen its own tolerance. ``min_tol`` is the resolution below which a change never
counts (a factor 1.25 on the log scale). A metric whose seeds scatter widely gets a wide tolerance; ``cap``
(a factor 3, or 0.5 nat) is then the change the gate should resolve, and the baseline file says which metrics
cannot (``reason``): they are still checked, against their wider tolerance.

Non-finite values and failures are counted, not averaged away: a metric that was finite in every baseline seed
and is NaN or infinite in any seed now is a regression (KL = [0.10, 0.12, 0.11, inf] fails); a metric that
was already non-finite in some baseline seed is compared over its finite seeds, and is a regression when no
seed is finite now. Likewise a run that fails (status not "ok") in a cell whose baseline seeds all finished,
or a model that becomes improper in a cell whose baseline models were all proper, is a regression, and so
is a cell whose every seed now fails (or is improper) where some baseline seed did not. Not checked
(``check`` = "none"): a density metric of a cell whose baseline had an improper model (its KL or
log-likelihood is not a density's), and a metric with fewer than MIN_SEEDS finite baseline seeds. Metrics
without a rule (per-mode weights, work counts, the R-hat of deterministic chains, which measures no mixing)
are not checked. The rules are the metrics' own declarations (metrics/catalogue.py: ``better`` and ``gate``),
so a plug-in metric with a gate is checked like a built-in.

Older baselines (4 seeds, re-run in full by the check, a "range" check for wide metrics, non-finite seeds
dropped) are still read: every checked metric is tested as above on their 4 seeds, and their dropped
non-finite seeds are recovered from n_ok - n_seeds.

Cost: CI re-runs CHECK_SEEDS seeds of every baseline cell (8 algorithms x 4 targets x 4 seeds of the toy2d
quick suite, about 20 minutes on 2 cores); ``bench baseline`` runs twice that.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench import tables
from bench.errors import BenchError
from bench.store import atomic_write_csv, read_table
from metrics.catalogue import METRICS, declaration

#: the per-run false-alarm rate the tolerances are set for (family-wise, Bonferroni over the checked metrics)
ALPHA = 0.05
BASELINE_SEEDS = 8
CHECK_SEEDS = 4
MIN_SEEDS = 3
#: a log-scale metric is never a regression when less than MIN_FACTOR times worse; CAP_FACTOR: the change the
#: gate should resolve (a metric whose tolerance is wider is reported as coarse)
CAP_FACTOR, MIN_FACTOR = 3.0, 1.25


@dataclass(frozen=True)
class Rule:
    """How one metric is compared: direction (-1 lower is better, +1 higher), scale ("log" or "linear"),
    for log: z = log(max(x - lower, 0) + floor); ``min_tol``: the smallest tolerance on z; ``cap``: the
    largest change on z the gate should resolve. Made from a metric's declaration (``better`` and ``gate``,
    metrics/catalogue.py)."""

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
                    "std", "z_mean", "z_std", "check", "reason", "n_ok", "n_runs", "n_improper", "n_nonfinite",
                    "n_check"]
#: columns an older baseline may lack: recovered when it is read (read_baseline)
INFERRED_COLUMNS = ["n_nonfinite", "n_check"]
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
    """Per cell and ruled metric over finished seeds: the seeds whose value is not finite (``n_nonfinite``), and
    n, mean and std of the raw values and of z over the finite ones."""
    cols = [*CELL, "metric", "n_seeds", "n_nonfinite", "mean", "std", "z_mean", "z_std"]
    ok = tables.ok_rows(results)
    ruled = {m: r for m in ok["metric"].unique() if (r := rule(m)) is not None}
    ok = ok[ok["metric"].isin(ruled)]
    if ok.empty:
        # typed, so that comparing a results set without one finished run (all diverged or runaway) is arithmetic
        return pd.DataFrame(columns=cols).astype(dict.fromkeys(cols[len(CELL) + 1:], float))
    value = ok["value"].astype(float)
    ok = ok.assign(value=value.where(np.isfinite(value)))
    ok = ok.assign(z=[float(ruled[m].transform(v)) for m, v in zip(ok["metric"], ok["value"], strict=True)])
    g = ok.groupby([*CELL, "metric"])
    out = g.agg(n_seeds=("value", "count"), n_all=("value", "size"), mean=("value", "mean"), std=("value", "std"),
                z_mean=("z", "mean"), z_std=("z", "std")).reset_index()
    return out.assign(n_nonfinite=out["n_all"] - out["n_seeds"])[cols]


def make_baseline(results: pd.DataFrame, n_check: int | None = None) -> pd.DataFrame:
    """Per cell and ruled metric: the statistics the check compares with, how it is checked and why.
    ``n_check``: the seeds ``bench check`` re-runs (the first ones); default all of the baseline's runs."""
    s = _z_stats(results).merge(_cell_counts(results), on=CELL)
    s["direction"] = s["metric"].map(direction)
    s["scale"] = s["metric"].map(lambda m: rule(m).scale)
    s["n_check"] = s["n_runs"] if n_check is None else min(int(n_check), int(s["n_runs"].max()))
    how, reason = [], []
    for r in s.itertuples():
        ru = rule(r.metric)
        if r.n_improper > 0 and tables.is_density_metric(r.metric):
            h, why = "none", f"improper model in {r.n_improper} of {r.n_runs} seeds: not a density"
        elif r.n_seeds < MIN_SEEDS:
            h, why = "none", f"{r.n_seeds} finite seeds, fewer than {MIN_SEEDS}"
        else:
            h, why = "mean", ""
            tol = tolerance(r.z_std, r.n_seeds, r.n_check, ru.min_tol, family=1)
            if tol > ru.cap:
                what = f"x{math.exp(tol):.3g}" if ru.scale == "log" else f"{tol:.3g}"
                cap = f"x{math.exp(ru.cap):.3g}" if ru.scale == "log" else f"{ru.cap:.3g}"
                why = f"coarse: seed spread too large to resolve {cap} (tolerance {what} or more)"
        how.append(h)
        reason.append(why)
    s["check"], s["reason"] = how, reason
    return s[BASELINE_COLUMNS]


def quantile(n_base, family: int, alpha: float = ALPHA):
    """The one-sided Student t quantile t_{n_b - 1}(1 - alpha / family) of the Bonferroni-corrected test."""
    return stats.t.ppf(1 - alpha / max(int(family), 1), np.maximum(np.asarray(n_base, dtype=float) - 1, 1))


def tolerance(z_std, n_base, n_now, min_tol, family: int, alpha: float = ALPHA):
    """tol = max(t_{n_b - 1}(1 - alpha / family) * s_b * sqrt(1/n_b + 1/n), min_tol) (module docstring)."""
    n_base = np.asarray(n_base, dtype=float)
    n_now = np.maximum(np.asarray(n_now, dtype=float), 1)
    raw = quantile(n_base, family, alpha) * np.asarray(z_std, dtype=float) * np.sqrt(1 / n_base + 1 / n_now)
    return np.maximum(np.nan_to_num(raw, nan=0.0), min_tol)


def check_rows(results: pd.DataFrame, suite: str, fidelity: str, where: str) -> pd.DataFrame:
    """The rows of one suite and fidelity; any other row is refused (a baseline is one suite at one fidelity)."""
    other = results[(results["suite"] != suite) | (results["fidelity"] != fidelity)]
    if len(other):
        found = ", ".join(sorted({f"{a}/{b}" for a, b in zip(other["suite"], other["fidelity"], strict=True)}))
        raise BenchError(f"{where}: holds rows of {found}, not only {suite}/{fidelity}: a baseline is one suite at "
                         "one fidelity")
    return results


def write_baseline(results: pd.DataFrame, path: Path, n_check: int | None = None) -> pd.DataFrame:
    base = make_baseline(results, n_check)
    if (base["check"] == "none").all():
        raise BenchError("no finished runs with gateable metrics to make a baseline from "
                         f"(need at least {MIN_SEEDS} finished seeds per cell)")
    atomic_write_csv(Path(path), base)
    return base


def read_baseline(path: Path) -> pd.DataFrame:
    """A baseline file, of this version or an older one (module docstring): an older file's checks by range
    become checks by mean, its non-finite seeds (dropped then) are n_ok - n_seeds, its check re-ran every seed."""
    df = read_table(Path(path), required=["suite", "fidelity", "metric"])
    missing = [c for c in BASELINE_COLUMNS if c not in df.columns and c not in INFERRED_COLUMNS]
    if missing:
        raise BenchError(f"{path}: not a baseline of this version (missing columns: {', '.join(missing)}); "
                         "make a new one with 'python -m bench baseline'")
    if "n_nonfinite" not in df.columns:
        df["n_nonfinite"] = np.where(df["check"] == "none", 0, (df["n_ok"] - df["n_seeds"]).clip(lower=0))
    if "n_check" not in df.columns:
        df["n_check"] = df["n_runs"]
    df["check"] = df["check"].replace({"range": "mean"})
    return df.assign(reason=df["reason"].astype(object).where(df["reason"].notna(), ""))


def compare(results: pd.DataFrame, baseline: pd.DataFrame, family: int | None = None,
            alpha: float = ALPHA) -> pd.DataFrame:
    """One row per baseline entry: baseline and measured mean (raw), the difference of the means on the rule's
    scale (``worse_by``, > 0: worse), the tolerance, and the verdict ("not checked: ..." for excluded metrics).
    ``family``: the number of metrics tested in the run (default: those of ``baseline`` checked by mean)."""
    keys = [*CELL, "metric"]
    if family is None:
        family = int((baseline["check"] == "mean").sum())
    now = _z_stats(results)[[*keys, "n_seeds", "n_nonfinite", "mean", "z_mean"]]
    cmp = baseline.merge(now, on=keys, how="left", suffixes=("_base", ""))
    counts = _cell_counts(results)[[*CELL, "n_runs", "n_ok", "n_improper"]]
    cmp = cmp.merge(counts, on=CELL, how="left", suffixes=("", "_now"))
    lo = cmp["metric"].map(lambda m: rule(m).min_tol)
    cmp["tolerance"] = tolerance(cmp["z_std"], cmp["n_seeds_base"], cmp["n_seeds"].fillna(1), lo, family, alpha)
    cmp["worse_by"] = (cmp["z_mean"] - cmp["z_mean_base"]) * -cmp["direction"]
    n_runs_now, n_ok_now = cmp["n_runs_now"].fillna(0), cmp["n_ok_now"].fillna(0)
    # failures and improper models: a regression where every baseline seed finished / was proper (or the cell
    # has no run now), or where the count now is improbable at the baseline's own rate: a binomial tail below
    # alpha / family (improper or failed seeds are random per seed in some cells: CoopFlow's EBM on four_mode is
    # improper in most seeds, so "all 4 check seeds improper" happens by chance and is no regression)
    def unlikely(k_now, k_base):
        p = (k_base / cmp["n_runs"]).clip(0, 1).fillna(0)
        return (k_now > 0) & (stats.binom.sf(k_now - 1, n_runs_now, p) < alpha / max(int(family or 1), 1))

    n_bad_now = n_runs_now - n_ok_now
    failed = (((n_bad_now > 0) & (cmp["n_ok"] == cmp["n_runs"])) | (n_runs_now == 0)
              | unlikely(n_bad_now, cmp["n_runs"] - cmp["n_ok"]))
    n_imp_now = cmp["n_improper_now"].fillna(0)
    improper = (((n_imp_now > 0) & (cmp["n_improper"] == 0)) | unlikely(n_imp_now, cmp["n_improper"])) \
        & cmp["metric"].map(tables.is_density_metric)
    nonfinite_now = cmp["n_nonfinite"].fillna(0)
    nonfinite = ((nonfinite_now > 0) & (cmp["n_nonfinite_base"] == 0)) | (
        (nonfinite_now > 0) & (cmp["n_seeds"].fillna(0) == 0))
    missing = cmp["z_mean"].isna() & ~nonfinite
    unchecked = cmp["check"] == "none"
    beyond = cmp["worse_by"] > cmp["tolerance"]
    nf = ("REGRESSION (not finite in " + nonfinite_now.astype(int).astype(str) + " of "
          + (nonfinite_now + cmp["n_seeds"].fillna(0)).astype(int).astype(str) + " seeds; finite in the baseline)")
    cmp["verdict"] = np.select(
        [failed, improper, unchecked, nonfinite, missing, beyond],
        ["REGRESSION (runs failed)", "REGRESSION (model became improper)", "not checked: " + cmp["reason"], nf,
         "REGRESSION (metric missing)", "REGRESSION"], "ok")
    return cmp[[*keys, "check", "scale", "mean_base", "mean", "worse_by", "tolerance", "verdict", "reason"]]


def regressions(cmp: pd.DataFrame) -> pd.DataFrame:
    return cmp[cmp["verdict"].str.startswith("REGRESSION")]


def first_seeds(results: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rows of the first n seeds of every cell (the seeds ``bench check`` re-runs)."""
    return results[results["seed"] < n]


def false_alarms(results: pd.DataFrame, n_base: int, n_check: int, family: int | None = None,
                 alpha: float = ALPHA, max_splits: int = 200) -> dict:
    """The gate's false-alarm rate measured on seeds of unchanged code: the seeds are split into a baseline of
    n_base seeds and a check of n_check other seeds, every way (at most ``max_splits``, in a fixed order); each
    split is one gate run whose every alarm is false. Returns the splits, the splits with any alarm (``runs``),
    the tests made and the alarms raised over all splits (``tests``, ``alarms``) and the alarms per metric."""
    seeds = sorted(results["seed"].unique())
    if len(seeds) < n_base + n_check:
        raise BenchError(f"false-alarm rate: {len(seeds)} seeds, need {n_base} + {n_check}")
    splits = [(b, c) for b in itertools.combinations(seeds, n_base)
              for c in itertools.combinations([s for s in seeds if s not in b], n_check)][:max_splits]
    runs, tests, alarms, per_metric = 0, 0, 0, {}
    for b, c in splits:
        base = make_baseline(results[results["seed"].isin(b)])
        fam = int((base["check"] == "mean").sum()) if family is None else family
        cmp = compare(results[results["seed"].isin(c)], base, family=fam, alpha=alpha)
        checked = cmp[cmp["check"] != "none"]
        bad = regressions(checked)
        tests += len(checked)
        alarms += len(bad)
        runs += bool(len(bad))
        for m in bad["metric"]:
            per_metric[m] = per_metric.get(m, 0) + 1
    return {"splits": len(splits), "runs": runs, "tests": tests, "alarms": alarms, "per_metric": per_metric}


def render(cmp: pd.DataFrame) -> str:
    bad = regressions(cmp)
    n = cmp["check"].value_counts()
    coarse = cmp["reason"].str.startswith("coarse")
    head = (f"{len(cmp) - n.get('none', 0)} metrics checked against the baseline ({int(coarse.sum())} of them "
            f"coarse): {len(bad)} regression(s).\n"
            "worse_by and tolerance are on each metric's scale (log: log-ratio, log(3) = 1.1 is 3 times worse; "
            f"linear: the metric's units); tolerances hold the false-alarm rate per run at {ALPHA:.0%}.")
    with pd.option_context("display.width", 120, "display.max_rows", 500, "display.max_colwidth", 60,
                           "display.float_format", "{:.4g}".format):
        body = bad.drop(columns=["suite", "fidelity", "reason", "check"]).to_string(index=False, line_width=160) \
            if len(bad) else "(none)"
    lines = [head, body]
    for part, title in ((cmp[coarse], "checked, coarse"), (cmp[cmp["check"] == "none"], "not checked")):
        if len(part):
            why = part["reason"].str.replace(r"\d+ of \d+ seeds", "k of n seeds", regex=True)
            why = why.str.replace(r" \(tolerance .*", "", regex=True)
            lines.append(f"{len(part)} metrics {title}:")
            lines += [f"  {k:4d}  {w}" for w, k in why.value_counts().items()]
    return "\n".join(lines) + "\n"
