"""Write the tables of a results folder to <out>/tables/ (CSV + a text rendering) and return the text."""

from __future__ import annotations

import pandas as pd

import datasets
from bench import tables, tables_highdim
from bench.store import ResultStore, atomic_write_bytes, atomic_write_csv


def _reference(suite: str) -> str | None:
    from bench.suite import load_suite

    try:
        return load_suite(suite).get("reference")
    except Exception:  # a results folder from a suite file that no longer exists: no paired table
        return None


def write_tables(store: ResultStore) -> str:
    res = store.results()
    out = store.out / "tables"
    parts = []
    truth = {t: datasets.get_target(t).mode_weights.tolist()
             for t in res["target"].unique() if datasets.get_target(t).has_modes}
    specs = [(spec["name"], spec["title"], tables.paper_table(res, spec)) for spec in tables.applicable_tables(res)]
    for suite in sorted(res["suite"].unique()):
        ref = _reference(suite)
        if ref and ref in set(res["algorithm"]):
            d = tables.paired_differences(res[res["suite"] == suite], ref)
            d = d[d["metric"].isin(tables.KEY_METRICS)]
            if len(d) and d["n_pairs"].max() >= 2:
                d = d.assign(flag=d["significant"].map({True: "", False: "n.s."}))
                specs.append((f"paired_{suite}", f"{suite}: difference to {ref}, paired by seed, mean and 95 % CI "
                              "(n.s.: the CI contains 0)", d.set_index(["target", "metric", "algorithm"])))
    specs += tables_highdim.sections(res)
    specs += [
        ("key_metrics", "Headline metrics: mean ± 95 % CI over seeds", tables.key_metrics(res)),
        ("mode_weights", "Final EBM mode weights (mean over seeds) and the true weights",
         tables.weights_table(res, truth)),
        ("work", "Time and work per run (means over seeds)", tables.work_table(res)),
        ("status", "Runs by status", tables.status_counts(res)),
        ("summary", "All metrics: mean, std over seeds", tables.summary(res)),
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4g}".format):
        for name, title, df in specs:
            atomic_write_csv(out / f"{name}.csv", df.reset_index() if df.index.name or df.index.nlevels > 1 else df)
            if name != "summary":
                parts.append(f"## {title}\n{df.to_string() if len(df) else '(no data)'}\n")
    text = "\n".join(parts)
    atomic_write_bytes(out / "tables.txt", text.encode())
    return text
