"""Metric regression gate: compare a sweep with a committed baseline.

``bench baseline`` runs (or reads) a sweep of one suite at one fidelity and writes, per (target, algorithm,
metric), the metric's value in every seed and its statistics over seeds; ``bench check`` re-runs the first
CHECK_SEEDS of those seeds and exits 1 when a metric got worse beyond what a change of random stream explains,
when a value that was finite in every baseline seed is not finite now, or when improbably many runs now fail or
leave models that leak mass out of the evaluation box.

The scale. EBM metrics are heavy-tailed across seeds: one seed's KL can be 100 times another's. Each checked
metric therefore has a ``Rule``: its better direction and the scale it is compared on,

- ``log``: z = log(max(x - lower, 0) + floor) for positive, multiplicatively noisy errors (KL, weight MSEs,
  log-density error, parameter errors, R-hat - 1, ESS). ``floor`` is the resolution below which differences
  do not matter (e.g. 1e-5 for a weight MSE, 0.01 for R-hat - 1), so two near-perfect values are not
  "10 times apart". Differences of z are log-ratios: log(3) = 1.1 is "3 times worse".
- ``linear``: z = x, for metrics in natural units that can be negative (test log-likelihood, nats).

The test. The gate is one run of many tests (one per metric and cell, about 260 on toy2d quick, plus a count
of failed runs and of improper models per cell), and a gate that cries wolf is ignored: its false-alarm rate
is controlled per run, not per metric. The baseline has BASELINE_SEEDS = 8 seeds (0-7) and stores every seed's
value (``seeds``, ``runs``, ``values``); ``bench check`` re-runs the first CHECK_SEEDS = 4 of them. Per cell the
8 baseline runs and the n check runs are the cell's *units*. Each test has a nominal one-sided p-value:

- a metric: Student's two-sample t on z, pooled over both groups' spread (so one outlying check seed widens
  its own test instead of looking like a shift), T = worse_by / (s_p sqrt(1/n_b + 1/n)) with s_p at least
  half the rule's resolution ``min_tol`` (a metric whose seeds all agree has no zero spread to divide by);
  p = P(t_{n_b + n - 2} > T);
- failed runs of a cell, and improper models among its finished runs: Fisher's exact test (the hypergeometric
  chance that the check's runs hold at least as many of the cell's failed (improper) units as they do).

A run alarms on test i when p_i is below a threshold set by permutation (Westfall and Young 1993, single-step
min-p): the check's units are exchanged with the baseline's at random, in every cell independently
(PERMUTATIONS times, a fixed random stream), the smallest p of all tests is recorded each time, and test i
alarms when its adjusted p, (1 + #{rearrangements whose smallest p is <= p_i}) / (PERMUTATIONS + 1), is at
most ALPHA = 0.05. The guarantee: when the code is unchanged and only the random stream differs (other seeds),
the check's units and the baseline's are exchangeable within each cell, and the chance that a run raises any
false alarm is at most ALPHA, whatever the metrics' distributions across seeds (few-valued, heavy-tailed,
zero spread), the correlation of the metrics of a cell and the number of tests. The nominal p-values are only
a common scale; they need not be right. The permutation spends the run's ALPHA where false alarms can
actually happen: a cell whose 12 units agree cannot alarm and costs nothing, unlike a Bonferroni share. The
price: with 8 + 4 units a cell has 495 arrangements, so a change must be visible in its size (a large T), not
only in its ranks. A metric is also never a regression when it is worse by less than ``min_tol`` (a factor 1.25
on the log scale), which only removes alarms. ``tolerance`` in the table is the change of the mean the
threshold allows at the check's observed spread.

Counted, not averaged away, by rules outside that guarantee (meant for bugs; no finished run of toy2d quick has
a non-finite gated value in 12 seeds, so they raise no false alarm there): a metric that was finite in every
baseline seed and is NaN or infinite in any finished seed now is a regression (KL = [0.10, 0.12, 0.11, inf]
fails); one already non-finite in some baseline seed is compared over its finite seeds, and is a regression when
no finished seed is finite now; a metric that a finished run no longer reports, and a cell with no run now, are
regressions. Failed runs and improper models are random per seed in some cells (short-run EBM diverges in 1 of 8
two_mode seeds at quick settings, NT-EBM's model on rings is improper in 1 of 8), so they are tested by count
(above): 4 of 4 failed where the baseline's 8 finished is p = 1/495, 1 of 4 is p = 1/3. Not checked by value
(``check`` = "none"): a density metric of a cell whose baseline had an improper model (its KL or log-likelihood
is not a density's), and a metric with fewer than MIN_SEEDS finite baseline seeds; their cell's counts are still
tested. Density metrics of improper check runs are left out of the value test. Metrics without a rule (per-mode
weights, work counts, the R-hat of deterministic chains, which measures no mixing) are not checked. The rules
are the metrics' own declarations (metrics/catalogue.py: ``better`` and ``gate``), so a plug-in metric with a
gate is checked like a built-in. ``false_alarms`` measures the per-run rate on seeds of unchanged code (each
split of the seeds into baseline and check seeds is one gate run); ``bench baseline`` prints it for its own
seeds.

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

#: the per-run false-alarm rate (family-wise, over every test of a run; module docstring)
ALPHA = 0.05
BASELINE_SEEDS = 8
CHECK_SEEDS = 4
MIN_SEEDS = 3
#: random rearrangements of the units that set the run's threshold (Monte Carlo error of a 5 % rate: 0.5 %)
PERMUTATIONS = 2000
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
                    "n_check", "seeds", "runs", "values"]
CELL = ["suite", "fidelity", "target", "algorithm"]
#: the outcome of each run, as the baseline's ``runs`` column spells it
OK, IMPROPER, FAILED = "ok", "improper", "failed"


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


def _runs(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run (cell and seed, in seed order) with its outcome: ok, improper (finished, model improper)
    or failed (status not "ok": diverged, runaway, timeout, ...)."""
    runs = results.drop_duplicates([*CELL, "seed"])[[*CELL, "seed", "status"]]
    imp = tables.improper_seeds(results)
    flags = imp.rename("_imp").reset_index() if len(imp) else None
    runs = runs.merge(flags, on=[*CELL, "seed"], how="left") if flags is not None else runs.assign(_imp=False)
    improper = runs["_imp"].astype("boolean").fillna(False).astype(bool)
    outcome = np.where(runs["status"] != "ok", FAILED, np.where(improper, IMPROPER, OK))
    return runs.assign(seed=runs["seed"].astype(int), outcome=outcome)[[*CELL, "seed", "outcome"]] \
        .sort_values([*CELL, "seed"]).reset_index(drop=True)


def _seed_values(results: pd.DataFrame) -> dict:
    """{(cell..., metric): {seed: value}} of the finished runs' ruled metrics (non-finite values kept)."""
    ok = tables.ok_rows(results)
    ok = ok[ok["metric"].map(lambda m: rule(m) is not None).astype(bool)]
    out: dict = {}
    if ok.empty:
        return out
    for (*key, seed), v in zip(ok[[*CELL, "metric", "seed"]].itertuples(index=False, name=None),
                               ok["value"].astype(float), strict=True):
        out.setdefault(tuple(key), {})[int(seed)] = v
    return out


def make_baseline(results: pd.DataFrame, n_check: int | None = None) -> pd.DataFrame:
    """Per cell and ruled metric: the statistics the check compares with, how it is checked and why, and every
    seed's outcome and value (``seeds``, ``runs``, ``values``: space-separated, in seed order; a failed run's
    value is nan). ``n_check``: the seeds ``bench check`` re-runs (the first ones); default all of the
    baseline's runs."""
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
    runs = {key: g for key, g in _runs(results).groupby(CELL)}
    values = _seed_values(results)
    seeds, outcomes, vals = [], [], []
    for key in s[[*CELL, "metric"]].itertuples(index=False, name=None):
        g = runs[key[:-1]]
        v = values.get(key, {})
        seeds.append(" ".join(str(x) for x in g["seed"]))
        outcomes.append(" ".join(g["outcome"]))
        vals.append(" ".join(repr(float(v.get(x, math.nan))) for x in g["seed"]))
    s["seeds"], s["runs"], s["values"] = seeds, outcomes, vals
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
    """A baseline file of this version: one that lacks the seeds' values (made before the gate's permutation
    test) is refused, with the command that remakes it from the same results without computing anything."""
    df = read_table(Path(path), required=["suite", "fidelity", "metric"])
    missing = [c for c in BASELINE_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{path}: not a baseline of this version (missing columns: {', '.join(missing)}); "
                         "make a new one with 'python -m bench baseline' (with --results DIR, from the results "
                         "folder it was made from, without running anything)")
    for col in ("seeds", "runs", "values"):
        df[col] = df[col].fillna("").astype(str)
    return df.assign(reason=df["reason"].astype(object).where(df["reason"].notna(), ""))


def _floats(text: str) -> np.ndarray:
    return np.array(text.split(), dtype=float)


def _nominal(mask: np.ndarray, z: np.ndarray, sign: np.ndarray, floor: np.ndarray, failed: np.ndarray,
             improper: np.ndarray) -> dict:
    """One cell's tests under each arrangement of its units (module docstring). mask (B, N): which units are
    the check's; z (N, m): the value-tested metrics' z (NaN: not used: failed, not finite, or a density metric
    of an improper model); sign (m,) = -direction; floor (m,): least pooled spread; failed, improper (N,) bool.
    Returns per arrangement the metrics' Student t p-values ``p`` (B, m; 1 where a group is too small), their
    worse_by, pooled spread ``sp``, sizes ``n1``, ``n2``, and the Fisher p-values of the failed runs
    (``p_failed``) and of the improper models among finished runs (``p_improper``), (B,)."""
    w = mask.astype(float)
    fin = np.isfinite(z)
    f = fin.astype(float)
    # centred on each metric's mean over all units (the sums of squares below lose no digits)
    zc = np.where(fin, z - np.where(fin, z, 0.0).sum(0) / np.maximum(f.sum(0), 1), 0.0)
    n2, s2, q2 = w @ f, w @ zc, w @ zc**2
    n1, s1, q1 = f.sum(0) - n2, zc.sum(0) - s2, (zc**2).sum(0) - q2
    with np.errstate(invalid="ignore", divide="ignore"):
        m1, m2 = s1 / n1, s2 / n2
        df = n1 + n2 - 2
        ss = np.maximum(q1 - s1 * m1, 0) + np.maximum(q2 - np.where(n2 > 0, s2 * m2, 0), 0)
        sp = np.maximum(np.sqrt(ss / df), floor)
        worse = (m2 - m1) * sign
        t = worse / (sp * np.sqrt(1 / n1 + 1 / n2))
        p = np.where((n1 >= 2) & (n2 >= 1), stats.t.sf(t, np.maximum(df, 1)), 1.0)
    n = len(failed)
    k = w @ failed.astype(float)
    p_failed = np.where(k > 0, stats.hypergeom.sf(k - 1, n, int(failed.sum()), w.sum(1)), 1.0)
    done = ~failed
    k = w @ (improper & done).astype(float)
    p_improper = np.where(k > 0, stats.hypergeom.sf(k - 1, int(done.sum()), int((improper & done).sum()),
                                                     w @ done.astype(float)), 1.0)
    return {"p": np.nan_to_num(p, nan=1.0), "worse_by": worse, "sp": sp, "n1": n1, "n2": n2,
            "p_failed": p_failed, "p_improper": p_improper}


def compare(results: pd.DataFrame, baseline: pd.DataFrame, alpha: float = ALPHA,
            permutations: int = PERMUTATIONS, rng_seed: int = 0) -> pd.DataFrame:
    """One row per baseline entry: baseline and measured mean (raw), the difference of the means on the rule's
    scale (``worse_by``, > 0: worse), the tolerance, the nominal and adjusted p-values of its value test, and the
    verdict ("not checked: ..." for excluded metrics). The family is every test of the cells compared; the
    threshold comes from ``permutations`` random rearrangements of each cell's units (module docstring), drawn
    from a fixed stream (``rng_seed``) so that the same results always get the same verdicts."""
    keys = [*CELL, "metric"]
    now = _z_stats(results)[[*keys, "n_seeds", "n_nonfinite", "mean", "z_mean"]]
    cmp = baseline.merge(now, on=keys, how="left", suffixes=("_base", ""))
    counts = _cell_counts(results)[[*CELL, "n_runs", "n_ok", "n_improper"]]
    cmp = cmp.merge(counts, on=CELL, how="left", suffixes=("", "_now")).reset_index(drop=True)
    density = cmp["metric"].map(tables.is_density_metric).to_numpy(bool)
    n_rows = len(cmp)
    p = np.ones(n_rows)
    p_failed, p_improper = np.ones(n_rows), np.ones(n_rows)
    worse_by, scale_now = np.full(n_rows, np.nan), np.full(n_rows, np.nan)
    sizes = np.zeros((n_rows, 2))
    rng = np.random.default_rng(rng_seed)
    null_min = np.ones(permutations)
    runs_now = {key: g for key, g in _runs(results).groupby(CELL)}
    values_now = _seed_values(results)
    for key, rows in cmp.groupby(CELL, sort=True).groups.items():
        if key not in runs_now:
            continue
        rows = np.asarray(rows)
        first = cmp.loc[rows[0]]
        outcome = np.array(first["runs"].split() + runs_now[key]["outcome"].tolist())
        seeds_now = runs_now[key]["seed"].tolist()
        n_b, n = len(first["runs"].split()), len(outcome)
        failed, improper = outcome == FAILED, outcome == IMPROPER
        tested = rows[(cmp.loc[rows, "check"] == "mean").to_numpy()]
        z = np.full((n, len(tested)), np.nan)
        sign, floor = np.zeros(len(tested)), np.zeros(len(tested))
        for j, i in enumerate(tested):
            ru = rule(cmp.at[i, "metric"])
            v_now = values_now.get((*key, cmp.at[i, "metric"]), {})
            x = np.concatenate([_floats(cmp.at[i, "values"]), [v_now.get(s, math.nan) for s in seeds_now]])
            with np.errstate(invalid="ignore", divide="ignore"):
                zj = ru.transform(np.where(np.isfinite(x), x, np.nan))
            if density[i]:
                zj[improper] = np.nan
            z[:, j] = np.where(np.isfinite(zj), zj, np.nan)
            sign[j], floor[j] = -ru.direction, ru.min_tol / 2
        mask = np.zeros((permutations + 1, n), bool)
        mask[0, n_b:] = True
        order = np.argsort(rng.random((permutations, n)), axis=1)[:, : n - n_b]
        np.put_along_axis(mask[1:], order, True, axis=1)
        t = _nominal(mask, z, sign, floor, failed, improper)
        has_density = bool(density[rows].any())
        cell_p = [t["p"], t["p_failed"][:, None]] + ([t["p_improper"][:, None]] if has_density else [])
        null_min = np.minimum(null_min, np.concatenate(cell_p, axis=1)[1:].min(axis=1))
        p[tested] = t["p"][0]
        worse_by[tested], scale_now[tested] = t["worse_by"][0], t["sp"][0]
        sizes[tested] = np.stack([t["n1"][0], t["n2"][0]], axis=1)
        p_failed[rows] = t["p_failed"][0]
        p_improper[rows] = t["p_improper"][0] if has_density else 1.0
    null_sorted = np.sort(null_min)

    def adjusted(x):
        return (1 + np.searchsorted(null_sorted, x, side="right")) / (permutations + 1)

    # the largest nominal p that still alarms: below the k-th smallest rearranged minimum
    k = math.floor(alpha * (permutations + 1)) - 1
    critical = null_sorted[k] if k >= 0 else 0.0
    min_tol = cmp["metric"].map(lambda m: rule(m).min_tol).to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = sizes.sum(1) - 2
        allowed = stats.t.isf(critical, np.maximum(df, 1)) * scale_now * np.sqrt(1 / sizes[:, 0] + 1 / sizes[:, 1])
    cmp["tolerance"] = np.where(np.isfinite(scale_now), np.maximum(np.nan_to_num(allowed, nan=np.inf), min_tol),
                                np.nan)
    cmp["worse_by"] = worse_by
    cmp["p"], cmp["p_adj"] = p, adjusted(p)
    n_runs_now, n_ok_now = cmp["n_runs_now"].fillna(0), cmp["n_ok_now"].fillna(0)
    failed = (n_runs_now == 0) | (adjusted(p_failed) <= alpha)
    improper = (adjusted(p_improper) <= alpha) & density
    nonfinite_now = cmp["n_nonfinite"].fillna(0)
    n_finite_now = cmp["n_seeds"].fillna(0)
    nonfinite = (nonfinite_now > 0) & ((cmp["n_nonfinite_base"] == 0) | (n_finite_now == 0))
    missing = (n_ok_now > 0) & (n_finite_now + nonfinite_now == 0)
    unchecked = cmp["check"] == "none"
    beyond = (cmp["p_adj"] <= alpha) & (cmp["worse_by"] > min_tol)
    nf = ("REGRESSION (not finite in " + nonfinite_now.astype(int).astype(str) + " of "
          + (nonfinite_now + n_finite_now).astype(int).astype(str) + " seeds; finite in the baseline)")
    cmp["verdict"] = np.select(
        [failed, improper, unchecked, nonfinite, missing, beyond],
        ["REGRESSION (runs failed)", "REGRESSION (model became improper)", "not checked: " + cmp["reason"], nf,
         "REGRESSION (metric missing)", "REGRESSION"], "ok")
    out = cmp[[*keys, "check", "scale", "mean_base", "mean", "worse_by", "tolerance", "p", "p_adj", "verdict",
               "reason"]].copy()
    out.attrs["critical_p"] = float(critical)
    return out


def regressions(cmp: pd.DataFrame) -> pd.DataFrame:
    return cmp[cmp["verdict"].str.startswith("REGRESSION")]


def first_seeds(results: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rows of the first n seeds of every cell (the seeds ``bench check`` re-runs)."""
    return results[results["seed"] < n]


def false_alarms(results: pd.DataFrame, n_base: int, n_check: int, alpha: float = ALPHA,
                 max_splits: int = 200, permutations: int = PERMUTATIONS) -> dict:
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
        cmp = compare(results[results["seed"].isin(c)], base, alpha=alpha, permutations=permutations)
        checked = cmp[cmp["check"] != "none"]
        bad = regressions(cmp)
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
            f"linear: the metric's units); p: a test's nominal p-value, p_adj: adjusted over the run by "
            f"permutation (an alarm at p_adj <= {ALPHA:.0%}, here p < {cmp.attrs.get('critical_p', math.nan):.2g}): "
            f"a run of unchanged code with a new random stream raises any alarm with probability at most "
            f"{ALPHA:.0%}.")
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
