"""Tables from a results folder (pandas), laid out like the papers' tables with the published numbers
in adjacent columns. Only cells that finished ("ok") enter the means; failures are counted."""

from __future__ import annotations

import pandas as pd

from bench import published
from bench.store import KEY


def ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"]


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Every metric, mean and standard deviation over seeds, per suite/fidelity/target/algorithm."""
    ok = ok_rows(results)
    g = ok.groupby(["suite", "fidelity", "target", "algorithm", "metric"])["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    return out


def status_counts(results: pd.DataFrame) -> pd.DataFrame:
    runs = results.drop_duplicates(KEY)
    return runs.groupby(["suite", "fidelity", "target", "algorithm", "status"]).size().unstack(fill_value=0)


def work_table(results: pd.DataFrame) -> pd.DataFrame:
    """Time and work per run: seconds per iteration, gradient evaluations, as means over seeds."""
    runs = ok_rows(results).drop_duplicates(KEY)
    cols = ["n_iters", "time_per_iter_s", "train_time_s", "grad_evals", "energy_evals"]
    return runs.groupby(["target", "algorithm"])[cols].mean()


def _mean(results, metric, target=None):
    s = summary(results)
    s = s[s["metric"] == metric]
    if target is not None:
        s = s[s["target"] == target]
    return s


def table1(results: pd.DataFrame) -> pd.DataFrame:
    """000 Table 1: median squared log-density error, measured (mean over seeds) beside published."""
    spec = published.TABLE1_000
    s = _mean(results, spec["metric"])
    algos = sorted(set(s["algorithm"]) | set(spec["values"]))
    rows = []
    for a in algos:
        row = {"algorithm": a}
        for t in spec["targets"]:
            hit = s[(s["algorithm"] == a) & (s["target"] == t)]
            row[f"{t} (measured)"] = float(hit["mean"].iloc[0]) if len(hit) else float("nan")
            row[f"{t} (seeds)"] = int(hit["n_seeds"].iloc[0]) if len(hit) else 0
            row[f"{t} ({spec['source']})"] = spec["values"].get(a, {}).get(t, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("algorithm")


def table3(results: pd.DataFrame) -> pd.DataFrame:
    """000 Table 3: the three mode-weight MSEs on the four-mode mixture, measured beside published."""
    spec = published.TABLE3_000
    s = summary(results)
    s = s[s["target"] == spec["target"]]
    algos = sorted(set(s["algorithm"]) | set(spec["values"]))
    rows = []
    for a in algos:
        row = {"algorithm": a}
        for metric, label in spec["columns"].items():
            hit = s[(s["algorithm"] == a) & (s["metric"] == metric)]
            row[f"{label} (measured)"] = float(hit["mean"].iloc[0]) if len(hit) else float("nan")
            row[f"{label} ({spec['source']})"] = spec["values"].get(a, {}).get(metric, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("algorithm")


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
