"""Write the tables of a results folder to <out>/tables/ (CSV + a text rendering) and return the text."""

from __future__ import annotations

import sys

import pandas as pd

import datasets
from bench import tables
from bench.store import ResultStore, save_outputs


def _reference(suite: str, store: ResultStore | None = None) -> str | None:
    from bench.suite import load_suite

    path = (store.suite_files() if store is not None else {}).get(suite, suite)
    try:
        return load_suite(path).get("reference")
    except Exception:  # a results folder from a suite file that no longer exists: no paired table
        return None


def make_tables(store: ResultStore) -> list[tuple[str, str, pd.DataFrame]]:
    """Every table of a results folder: (name, title, DataFrame)."""
    res = store.results()
    truth = {t: datasets.get_target(t).mode_weights.tolist()
             for t in res["target"].unique() if datasets.get_target(t).has_modes}
    specs = [(spec["name"], spec["title"], tables.paper_table(res, spec)) for spec in tables.applicable_tables(res)]
    for suite in sorted(res["suite"].unique()):
        ref = _reference(suite, store)
        if ref and ref in set(res["algorithm"]):
            d = tables.paired_differences(res[res["suite"] == suite], ref)
            d = d[d["metric"].isin(tables.KEY_METRICS)]
            if len(d) and d["n_pairs"].max() >= 2:
                d = d.assign(flag=d["significant"].map({True: "", False: "n.s."}))
                specs.append((f"paired_{suite}", f"{suite}: difference to {ref}, paired by seed, mean and 95 % CI "
                              "(n.s.: the CI contains 0)", d.set_index(["target", "metric", "algorithm"])))
    specs += [
        ("key_metrics", "Headline metrics: mean ± 95 % CI over seeds", tables.key_metrics(res)),
        ("mode_weights", "Final EBM mode weights (mean over seeds) and the true weights",
         tables.weights_table(res, truth)),
        ("work", "Time and work per run (means over seeds)", tables.work_table(res)),
        ("status", "Runs by status", tables.status_counts(res)),
        ("summary", "All metrics: mean, std over seeds", tables.summary(res)),
    ]
    return specs


def write_tables(store: ResultStore) -> str:
    """Write the tables to <out>/tables/ (CSV + tables.txt) and return their text rendering."""
    specs = make_tables(store)
    out = store.out / "tables"
    parts, files = [], {}
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4g}".format):
        for name, title, df in specs:
            flat = df.reset_index() if df.index.name or df.index.nlevels > 1 else df
            files[out / f"{name}.csv"] = flat.to_csv(index=False).encode()
            if name != "summary":
                parts.append(f"## {title}\n{df.to_string() if len(df) else '(no data)'}\n")
    text = "\n".join(parts)
    files[out / "tables.txt"] = text.encode()
    err = save_outputs(files)
    if err:  # a read-only or full results folder: the tables are still printed
        print(f"bench: warning: tables not saved in {out} ({err.strerror or err})", file=sys.stderr)
    return text
