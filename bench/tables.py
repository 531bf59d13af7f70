"""Tables from a results folder (pandas), laid out like the papers' tables with the published numbers
in adjacent columns. Only cells that finished ("ok") enter the means; failures are counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bench import published
from bench.store import KEY


def ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"]


def ci95_halfwidth(std, n):
    """Half-width of the 95 % confidence interval of a mean over n seeds (Student t); NaN for n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n >= 2, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)
        return t * np.asarray(std, dtype=float) / np.sqrt(n)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Every metric: mean, standard deviation and 95 % CI half-width over seeds, per
    suite/fidelity/target/algorithm."""
    ok = ok_rows(results)
    g = ok.groupby(["suite", "fidelity", "target", "algorithm", "metric"])["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["ci95"] = ci95_halfwidth(out["std"], out["n_seeds"])
    return out


def paired_differences(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per target, metric and algorithm: the mean over seeds of (algorithm - reference), paired by seed
    (seed s shares its data, initial parameters and chains across algorithms), its 95 % CI, and whether
    the CI excludes 0 (``significant``). Only seeds where both finished enter."""
    ok = ok_rows(results)[["target", "algorithm", "seed", "metric", "value"]]
    ref = ok[ok["algorithm"] == reference].drop(columns="algorithm")
    other = ok[ok["algorithm"] != reference]
    pair = other.merge(ref, on=["target", "seed", "metric"], suffixes=("", "_ref"))
    pair["diff"] = pair["value"] - pair["value_ref"]
    g = pair.groupby(["target", "metric", "algorithm"])["diff"]
    out = g.agg(mean_diff="mean", std="std", n_pairs="count").reset_index()
    out["ci95"] = ci95_halfwidth(out["std"], out["n_pairs"])
    out["significant"] = (out["mean_diff"].abs() > out["ci95"]) & out["ci95"].notna()
    return out.assign(reference=reference)


#: the headline metrics shown in the key-metrics table, in this order, where present
KEY_METRICS = ["ebm_weight[0]", "ebm_weight_mse", "kl", "kl_estimate", "log_z_error", "param_error[a]",
               "param_error[b]", "n_resamples", "ess", "logp_median_sq_error", "test_loglik", "flow_test_loglik",
               "flow_kl", "train_nfe_per_iter", "max_rhat", "min_ess_bulk"]


def key_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """Headline metrics per target and algorithm as 'mean ± 95 % CI half-width' over seeds."""
    s = summary(results)
    s = s[s["metric"].isin(KEY_METRICS)]
    if s.empty:
        return pd.DataFrame()
    cell = s.apply(lambda r: f"{r['mean']:.4g}" + ("" if pd.isna(r["ci95"]) else f" ± {r['ci95']:.2g}"), axis=1)
    wide = s.assign(cell=cell).pivot_table(index=["target", "algorithm"], columns="metric", values="cell",
                                           aggfunc="first")
    return wide[[m for m in KEY_METRICS if m in wide.columns]]


def status_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Runs per outcome (ok, diverged, timeout) and the failure rate, per algorithm and target."""
    runs = results.drop_duplicates(KEY)
    counts = runs.groupby(["suite", "fidelity", "target", "algorithm", "status"]).size().unstack(fill_value=0)
    counts["failure_rate"] = 1 - counts.get("ok", 0) / counts.sum(axis=1)
    return counts


def work_table(results: pd.DataFrame) -> pd.DataFrame:
    """Time and work per run: seconds per iteration, gradient evaluations, as means over seeds."""
    runs = ok_rows(results).drop_duplicates(KEY)
    cols = ["n_iters", "time_per_iter_s", "train_time_s", "grad_evals", "energy_evals"]
    return runs.groupby(["target", "algorithm"])[cols].mean()


def paper_table(results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Rows: algorithms (measured or published). For each (target, metric) column of the paper's table: the
    measured mean over seeds and the published value side by side; ``seeds``: the fewest seeds behind a
    measured value of the row."""
    s = summary(results)
    algos = sorted(set(s["algorithm"]) | set(spec["published"]))
    labels = spec.get("labels") or [t for t, _ in spec["columns"]]
    rows = []
    for a in algos:
        row, seeds = {"algorithm": a}, []
        published = spec["published"].get(a, [None] * len(spec["columns"]))
        for (t, metric), label, pub in zip(spec["columns"], labels, published, strict=True):
            hit = s[(s["algorithm"] == a) & (s["target"] == t) & (s["metric"] == metric)]
            row[label] = float(hit["mean"].iloc[0]) if len(hit) else float("nan")
            row[f"{label} [{spec['source']}]"] = float("nan") if pub is None else pub
            if len(hit):
                seeds.append(int(hit["n_seeds"].iloc[0]))
        row["seeds"] = min(seeds) if seeds else 0
        rows.append(row)
    return pd.DataFrame(rows).set_index("algorithm")


def applicable_tables(results: pd.DataFrame) -> list[dict]:
    targets = set(results["target"])
    return [spec for spec in published.PAPER_TABLES if {t for t, _ in spec["columns"]} & targets]


def weights_table(results: pd.DataFrame, true_weights: dict[str, list[float]]) -> pd.DataFrame:
    """Final EBM mode weights per target and algorithm (mean over seeds) next to the true weights."""
    s = summary(results)
    s = s[s["metric"].str.match(r"ebm_weight\[\d+\]")]
    if s.empty:
        return pd.DataFrame()
    s = s.assign(mode=s["metric"].str.extract(r"\[(\d+)\]")[0].astype(int))
    wide = s.pivot_table(index=["target", "algorithm"], columns="mode", values="mean")
    truth = pd.DataFrame([{"target": t, "algorithm": "p* (true)", **{k: w for k, w in enumerate(ws)}}
                          for t, ws in true_weights.items() if t in wide.index.get_level_values(0)])
    wide = pd.concat([wide, truth.set_index(["target", "algorithm"])]).sort_index()
    wide.columns = [f"w{k}" for k in wide.columns]
    return wide
