"""Tables from a results folder (pandas), laid out like the papers' tables with the published numbers
in adjacent columns. Only runs that finished ("ok") enter the means; failures are counted.

Every table says what its numbers are: ``describe`` gives the suite, fidelity and seed count for its title,
a ``settings`` column says where each cell's settings come from (paper, extrapolated, quick, smoke; see
``bench.suite.SETTINGS``), and notes (``DataFrame.attrs["notes"]``) carry warnings and footnotes.

Improper models: a run whose model leaks more than the evaluation's stated fraction of its mass out of the
evaluation box has ``improper`` = 1. Its density metrics (``is_density_metric``: mode weights, KL,
log-likelihood, log-density error, ...) describe a grid-truncated function, not a density: they are left out
of the means, which count them instead ("†k/n": k of n seeds improper).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bench import published
from bench.store import KEY
from metrics.catalogue import declaration, headline_labels

CELL = ["suite", "fidelity", "target", "algorithm"]
IMPROPER_MARK = "†"


def is_density_metric(metric: str) -> bool:
    """Whether the metric is computed from the model's normalised density (on the evaluation grid or exactly):
    its declaration's ``density`` (metrics/catalogue.py)."""
    m = declaration(metric)
    return bool(m is not None and m.density)


def ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"]


def ci95_halfwidth(std, n):
    """Half-width of the 95 % confidence interval of a mean over n seeds (Student t with n - 1 degrees of
    freedom times std / sqrt(n)); NaN for n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n >= 2, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)
        return t * np.asarray(std, dtype=float) / np.sqrt(n)


def improper_seeds(results: pd.DataFrame) -> pd.Series:
    """Per run (suite, fidelity, target, algorithm, seed): True where its model is improper. Empty where the
    results have no ``improper`` metric (older results)."""
    imp = results[results["metric"] == "improper"]
    return (imp.set_index([*CELL, "seed"])["value"].astype(float) >= 0.5).groupby(level=[*CELL, "seed"]).any()


def _flag_improper(ok: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    imp = improper_seeds(results)
    if imp.empty:
        return ok.assign(_improper=False)
    flags = imp.rename("_improper").reset_index()
    ok = ok.merge(flags, on=[*CELL, "seed"], how="left")
    density = {m: is_density_metric(m) for m in ok["metric"].unique()}
    return ok.assign(_improper=ok["_improper"].fillna(False).astype(bool) & ok["metric"].map(density))


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Every metric: mean, standard deviation and 95 % CI half-width over seeds, per
    suite/fidelity/target/algorithm. Density metrics of improper runs are left out and counted in
    ``n_improper`` (``n_seeds`` counts the seeds in the mean)."""
    ok = _flag_improper(ok_rows(results), results)
    keys = [*CELL, "metric"]
    n_imp = ok.groupby(keys)["_improper"].sum().rename("n_improper")
    g = ok[~ok["_improper"]].groupby(keys)["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count")
    out = out.join(n_imp, how="outer").reset_index()
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    out["n_improper"] = out["n_improper"].astype(int)
    out["ci95"] = ci95_halfwidth(out["std"], out["n_seeds"])
    return out


def settings_of(results: pd.DataFrame) -> pd.Series:
    """Per (suite, fidelity, target, algorithm): where its settings come from. Results written before the
    ``settings`` column existed say "unstated" (or their fidelity, for quick and smoke)."""
    if "settings" in results.columns:
        s = results["settings"].fillna("")
    else:
        s = pd.Series("", index=results.index)
    s = s.where(s != "", results["fidelity"].where(results["fidelity"].isin(["quick", "smoke"]), "unstated"))
    return results.assign(settings=s).groupby(CELL)["settings"].agg(lambda x: "/".join(sorted(set(x))))


def describe(results: pd.DataFrame) -> str:
    """'toy2d, quick fidelity, 2 seeds' for a table or figure title."""
    runs = results.drop_duplicates(KEY)
    per_cell = runs.groupby(CELL)["seed"].nunique()
    lo, hi = (int(per_cell.min()), int(per_cell.max())) if len(per_cell) else (0, 0)
    seeds = f"{lo} seed{'s' * (lo != 1)}" if lo == hi else f"{lo}-{hi} seeds"
    return (f"{', '.join(sorted(runs['suite'].unique()))}, {'/'.join(sorted(runs['fidelity'].unique()))} "
            f"fidelity, {seeds}")


def fmt_cell(mean, ci, n_improper=0, n_total=0) -> str:
    """'mean ± CI half-width' (4 and 2 significant digits), '†k/n' when k of n seeds are improper and left out,
    blank when there is nothing to show."""
    mark = f" {IMPROPER_MARK}{int(n_improper)}/{int(n_total)}" if n_improper else ""
    if pd.isna(mean):
        return f"improper{mark}" if n_improper else ""
    return f"{mean:.4g}" + ("" if pd.isna(ci) else f" ± {ci:.2g}") + mark


def _cells(s: pd.DataFrame) -> pd.Series:
    return pd.Series([fmt_cell(r.mean, r.ci95, r.n_improper, r.n_seeds + r.n_improper) for r in s.itertuples()],
                     index=s.index, dtype=object)


IMPROPER_NOTE = (f"{IMPROPER_MARK}k/n: k of the n seeds' models are improper (they leak mass out of the evaluation "
                 "box); their density metrics are left out of the mean")


def paired_differences(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per target, metric and algorithm: the mean over seeds of (algorithm - reference), paired by seed
    (seed s shares its data, initial parameters and chains across algorithms), its 95 % CI, whether the CI
    excludes 0 (``significant``) and the table's flag ("n.s." where it does not). Only seeds where both
    finished (and, for density metrics, both models are proper) enter."""
    ok = _flag_improper(ok_rows(results), results)
    ok = ok[~ok["_improper"]][["target", "algorithm", "seed", "metric", "value"]]
    ref = ok[ok["algorithm"] == reference].drop(columns="algorithm")
    other = ok[ok["algorithm"] != reference]
    pair = other.merge(ref, on=["target", "seed", "metric"], suffixes=("", "_ref"))
    pair["diff"] = pair["value"] - pair["value_ref"]
    g = pair.groupby(["target", "metric", "algorithm"])["diff"]
    out = g.agg(mean_diff="mean", std="std", n_pairs="count").reset_index()
    out["ci95"] = ci95_halfwidth(out["std"], out["n_pairs"])
    out["significant"] = (out["mean_diff"].abs() > out["ci95"]) & out["ci95"].notna()
    out["flag"] = np.where(out["significant"], "", "n.s.")
    return out.assign(reference=reference)


#: The headline metrics shown in the key-metrics table, in the order of registration, where present, with their
#: column label, are those whose declaration has a ``headline`` (metrics.catalogue.headline_labels).
#: ``max_rhat_deterministic``: R-hat of deterministic evaluation chains (CoopFlow's noise-free Langevin): it
#: measures how far apart the chains' starting points stay, not mixing, so it has its own column.
LEAK_METRIC = "mass_outside_box"


def _with_notes(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    df.attrs["notes"] = [n for n in notes if n]
    return df


def key_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """Headline metrics per target and algorithm as 'mean ± 95 % CI half-width' over seeds, with where the
    settings come from, the seeds, and the mass leaking out of the evaluation box (``leak``, mean over seeds)
    where measured."""
    s = summary(results)
    labels = headline_labels()
    shown = s[s["metric"].isin(labels)]
    if shown.empty:
        return pd.DataFrame()
    wide = shown.assign(cell=_cells(shown)).pivot_table(index=["target", "algorithm"], columns="metric",
                                                       values="cell", aggfunc="first")
    wide = wide[[m for m in labels if m in wide.columns]].fillna("")
    wide.columns = [labels[m] for m in wide.columns]
    settings = settings_of(results).droplevel(["suite", "fidelity"])
    seeds = results.drop_duplicates(KEY).groupby(["target", "algorithm"])["seed"].nunique()
    front = pd.DataFrame({"settings": settings.groupby(level=[0, 1]).agg("/".join), "seeds": seeds})
    leak = s[s["metric"] == LEAK_METRIC].set_index(["target", "algorithm"])["mean"]
    if len(leak):
        front["leak"] = leak.map("{:.2g}".format)
    out = front.join(wide, how="right").fillna("")
    notes = [IMPROPER_NOTE if (shown["n_improper"] > 0).any() else "",
             "leak: mean fraction of the model's mass outside the evaluation box" if len(leak) else "",
             "rhat_det: R-hat of deterministic evaluation chains (no noise): the spread of their starting "
             "points, not mixing" if "rhat_det" in out.columns else ""]
    return _with_notes(out, notes)


def status_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Runs per outcome (ok, diverged, timeout), the failure rate and the improper models, per algorithm and
    target."""
    runs = results.drop_duplicates(KEY)
    counts = runs.groupby(CELL + ["status"]).size().unstack(fill_value=0)
    counts["failure_rate"] = 1 - counts.get("ok", 0) / counts.sum(axis=1)
    imp = improper_seeds(results)
    if len(imp):
        counts["improper"] = imp.groupby(level=CELL).sum().reindex(counts.index).fillna(0).astype(int)
    return counts


def work_table(results: pd.DataFrame) -> pd.DataFrame:
    """Time and work per run: seconds per iteration, training wall time, the cell's CPU time (setup included;
    absent from older results), gradient evaluations, as means over seeds."""
    runs = ok_rows(results).drop_duplicates(KEY)
    cols = [c for c in ("n_iters", "time_per_iter_s", "train_time_s", "cpu_time_s", "grad_evals", "energy_evals")
            if c in runs.columns]
    return runs.groupby(["target", "algorithm"])[cols].mean() if cols else pd.DataFrame()


def _fmt_published(v) -> str:
    """A published number to 3 significant digits; a figure's published statement (text) as it is."""
    return "" if v is None else v if isinstance(v, str) else f"{v:.3g}"


def paper_table(results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Rows: algorithms (measured or published). For each (target, metric) column of the paper's table: the
    measured 'mean ± 95 % CI' over seeds and, beside it, the published value (blank where there is none);
    ``settings``: where the measured row's settings come from; ``seeds``: the fewest seeds behind a measured
    value of the row. Notes warn when the measured numbers are not at the paper's settings."""
    s = summary(results)
    algos = sorted(set(s["algorithm"]) | set(spec["published"]))
    labels = spec.get("labels") or [t for t, _ in spec["columns"]]
    settings = settings_of(results)
    rows, used = [], set()
    for a in algos:
        row, seeds, where = {"algorithm": a}, [], set()
        published_row = spec["published"].get(a, [None] * len(spec["columns"]))
        for (t, metric), label, pub in zip(spec["columns"], labels, published_row, strict=True):
            hit = s[(s["algorithm"] == a) & (s["target"] == t) & (s["metric"] == metric)]
            row[label] = _cells(hit).iloc[0] if len(hit) else ""
            row[f"{label} [{spec['source']}]"] = _fmt_published(pub)
            if len(hit):
                seeds.append(int(hit["n_seeds"].iloc[0] + hit["n_improper"].iloc[0]))
                where |= set(settings[(settings.index.get_level_values("algorithm") == a)
                                      & (settings.index.get_level_values("target") == t)])
        row["settings"] = "/".join(sorted(where))
        row["seeds"] = min(seeds) if seeds else ""
        used |= where
        rows.append(row)
    out = pd.DataFrame(rows).set_index("algorithm")
    notes = []
    not_paper = sorted(used - {"paper"})
    if not_paper:
        notes.append(f"WARNING: measured numbers at {', '.join(not_paper)} settings stand beside published ones "
                     f"({spec['source']}): they are not the paper's settings and not directly comparable")
    if "extrapolated" in used:
        notes.append("extrapolated: the paper did not run this algorithm on this target; the settings are this "
                     "suite's extrapolation of the paper's")
    if (s[s["metric"].isin([m for _, m in spec["columns"]])]["n_improper"] > 0).any():
        notes.append(IMPROPER_NOTE)
    return _with_notes(out, notes)


def applicable_tables(results: pd.DataFrame) -> list[dict]:
    targets = set(results["target"])
    return [spec for spec in published.PAPER_TABLES if {t for t, _ in spec["columns"]} & targets]


def weights_table(results: pd.DataFrame, true_weights: dict[str, list[float]]) -> pd.DataFrame:
    """Final EBM mode weights per target and algorithm (mean over proper seeds) next to the true weights;
    ``improper``: 'k/n' where k of the n seeds' models are improper and left out."""
    s = summary(results)
    s = s[s["metric"].str.match(r"ebm_weight\[\d+\]")]
    if s.empty:
        return pd.DataFrame()
    s = s.assign(mode=s["metric"].str.extract(r"\[(\d+)\]")[0].astype(int))
    # one row per (target, algorithm) that has weights: a cell without any (diverged on every seed) has no row
    wide = s.pivot_table(index=["target", "algorithm"], columns="mode", values="mean", dropna=False)
    imp = s.groupby(["target", "algorithm"]).agg(k=("n_improper", "max"), n=("n_seeds", "max"))
    wide = wide.reindex(imp.index)
    wide.columns = [f"w{k}" for k in wide.columns]
    if (imp["k"] > 0).any():
        wide["improper"] = [f"{k}/{k + n}" if k else "" for k, n in zip(imp["k"], imp["n"], strict=True)]
    truth = pd.DataFrame([{"target": t, "algorithm": "p* (true)", **{f"w{k}": w for k, w in enumerate(ws)}}
                          for t, ws in true_weights.items() if t in wide.index.get_level_values(0)])
    wide = pd.concat([wide, truth.set_index(["target", "algorithm"])]).sort_index()
    # blank, not NaN, where a target has fewer modes or a run is improper
    wide = wide.apply(lambda c: c.map(lambda v: "" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else v)))
    return _with_notes(wide, [IMPROPER_NOTE if "improper" in wide.columns else ""])
