"""The tables of a results folder: built once (``sections``), written to <out>/tables/ as CSV and as a text
rendering that fits a terminal (``write_tables``), and reused by the HTML report."""

from __future__ import annotations

import sys
import textwrap

import pandas as pd

import datasets
from bench import tables, tables_highdim, tables_images
from bench.store import ResultStore, save_outputs
from metrics.catalogue import headline_labels

#: text tables wrap their columns at this width
WIDTH = 110


def _reference(suite: str, store: ResultStore | None = None) -> str | None:
    from bench.suite import load_suite

    path = (store.suite_files() if store is not None else {}).get(suite, suite)
    try:
        return load_suite(path).get("reference")
    except Exception:  # a results folder from a suite file that no longer exists: no paired table
        return None


def sections(res: pd.DataFrame, store: ResultStore | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """(file name, title, table) of every table of a results frame whose metrics it holds (no empty table). Titles
    state the suite, fidelity and seed count; notes (warnings, footnotes) travel in ``table.attrs["notes"]``."""
    out = []
    truth = {t: datasets.get_target(t).mode_weights.tolist()
             for t in res["target"].unique() if datasets.get_target(t).has_modes}
    for fid in sorted(res["fidelity"].unique()):
        part = res[res["fidelity"] == fid]
        what = tables.describe(part)
        for spec in tables.applicable_tables(part):
            suffix = "" if res["fidelity"].nunique() == 1 else f"_{fid}"
            out.append((spec["name"] + suffix, f"{spec['title']}. Measured: {what}; mean ± 95 % CI over seeds",
                        tables.paper_table(part, spec)))
    what = tables.describe(res)
    for suite in sorted(res["suite"].unique()):
        ref = _reference(suite, store)
        sub = res[res["suite"] == suite]
        if ref and ref in set(sub["algorithm"]) and sub["fidelity"].nunique() == 1:
            d = tables.paired_differences(sub, ref)
            d = d[d["metric"].isin(headline_labels())]
            if len(d) and d["n_pairs"].max() >= 2:
                out.append((f"paired_{suite}", f"{tables.describe(sub)}: difference to {ref}, paired by seed, "
                            "mean and 95 % CI (n.s.: the CI contains 0)",
                            d.drop(columns=["significant", "reference"]).set_index(["target", "metric",
                                                                                     "algorithm"])))
    out += [(name, f"{title} ({what})", df) for name, title, df in tables_highdim.sections(res)]
    for suite in sorted(res["suite"].unique()):
        sub = res[res["suite"] == suite]
        out += [(f"{name}_{suite}", f"{title} ({tables.describe(sub)})", df)
                for name, title, df in tables_images.sections(sub, _reference(suite, store))]
    protocols = tables.protocols_table(res)
    if len(protocols):
        out.append(("sample_quality_protocols", f"Protocols of the FID / KID / IS values ({what}): values of different "
                    "protocols are never compared", protocols))
    out += [
        ("key_metrics", f"Headline metrics ({what}): mean ± 95 % CI over seeds", tables.key_metrics(res)),
        ("mode_weights", f"Final EBM mode weights ({what}; mean over seeds) and the true weights",
         tables.weights_table(res, truth)),
        ("work", f"Time and work per run ({what}; means over seeds)", tables.work_table(res)),
        ("status", f"Runs by status ({what})", tables.status_counts(res)),
        ("summary", f"All metrics ({what}): mean, std over seeds", tables.summary(res)),
    ]
    # a table is made when the results hold its metrics: one without rows is no section
    return _mark_code_versions(res, [(name, title, df) for name, title, df in out if len(df)])


def code_versions(res: pd.DataFrame) -> pd.DataFrame:
    """Per suite, fidelity, target and algorithm: the code versions its runs were made with and the seeds of each
    (a folder resumed across code versions, ``run --resume-across-code``, mixes them)."""
    if "code_version" not in res.columns:
        return pd.DataFrame()
    runs = res.drop_duplicates(["suite", "fidelity", "target", "algorithm", "seed"])
    g = runs.assign(code_version=runs["code_version"].fillna("unknown").astype(str)).groupby(
        ["suite", "fidelity", "target", "algorithm", "code_version"])["seed"]
    return g.agg(lambda s: " ".join(map(str, sorted(s)))).rename("seeds").reset_index().set_index(
        ["suite", "fidelity", "target", "algorithm"])


def _mark_code_versions(res: pd.DataFrame, out: list) -> list:
    """When the results mix code versions, every table says so in a note and a ``code_versions`` table says
    which runs came from which."""
    versions = sorted(set(res["code_version"].fillna("unknown").astype(str))) if "code_version" in res else []
    if len(versions) < 2:
        return out
    note = (f"MIXED CODE VERSIONS: these results come from {len(versions)} code versions ({', '.join(versions)}); "
            "table code_versions says which runs came from which")
    for _, _, df in out:
        df.attrs["notes"] = [*df.attrs.get("notes", []), note]
    return out + [("code_versions", "Code versions of the runs (results resumed across code versions)",
                   code_versions(res))]


def render(title: str, df: pd.DataFrame, width: int = WIDTH) -> str:
    """A table as text no wider than ``width`` (columns wrap into blocks), its notes below it."""
    with pd.option_context("display.float_format", "{:.4g}".format, "display.max_colwidth", 40):
        body = df.to_string(line_width=width)
    notes = "".join(textwrap.fill(n, width, initial_indent="  ", subsequent_indent="    ") + "\n"
                    for n in df.attrs.get("notes", []))
    return f"{textwrap.fill('## ' + title, width, subsequent_indent='   ')}\n{body}\n{notes}"


def make_tables(store: ResultStore) -> list[tuple[str, str, pd.DataFrame]]:
    """Every table of a results folder: (name, title, DataFrame)."""
    return sections(store.results(), store)


def write_tables(store: ResultStore) -> str:
    """Write the tables to <out>/tables/ (CSV + tables.txt) and return their text rendering."""
    res = store.results()
    out = store.out / "tables"
    parts, files = [], {}
    for name, title, df in sections(res, store):
        flat = df.reset_index() if df.index.name or df.index.nlevels > 1 else df
        files[out / f"{name}.csv"] = flat.to_csv(index=False).encode()
        if name != "summary":  # the CSV only: one row per metric is no reading matter
            parts.append(render(title, df))
    text = "\n".join(parts)
    files[out / "tables.txt"] = text.encode()
    err = save_outputs(files)
    if err:  # a read-only or full results folder: the tables are still printed
        print(f"bench: warning: tables not saved in {out} ({err.strerror or err})", file=sys.stderr)
    return text
