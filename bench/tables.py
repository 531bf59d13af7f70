"""Tables from a results folder (pandas), laid out like the papers' tables with the published numbers
in adjacent columns. Only runs that finished ("ok") enter the means; failures (diverged, runaway, timeout) are
counted: ``outcomes`` per cell, ``status_counts`` per outcome.

EBM results are heavy-tailed across seeds (one seed's KL can be 1e5 times another's), so a mean alone can be
one seed's number: from MIN_SEEDS_MEDIAN seeds on, a table cell gives the median over the same seeds beside the
mean ("mean ± CI (med m)").

Every table says what its numbers are: ``describe`` gives the suite, fidelity and seed count for its title,
a ``settings`` column says where each cell's settings come from (paper, extrapolated, quick, smoke; see
``bench.suite.SETTINGS``), and notes (``DataFrame.attrs["notes"]``) carry warnings and footnotes.

Sample quality (FID, KID, IS): every value is stored with its protocol (extractor, image counts, reference split,
quantisation; bench/evaluation.py). Two values measured under different protocols are never compared: where a
(target, metric) has several, each protocol's values get their own metric name, ``metric @p<hash>``
(``by_protocol``), and ``protocols_table`` says what each tag stands for.

Improper models: a run whose model leaks more than the evaluation's stated fraction of its mass out of the
evaluation box has ``improper`` = 1. Its density metrics (``is_density_metric``: mode weights, KL,
log-likelihood, log-density error, ...) describe a grid-truncated function, not a density: they are left out
of the means, which count them instead ("†k/n": k of n seeds improper).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pandas as pd
from scipy import stats

from bench import published
from bench.store import KEY
from metrics.catalogue import declaration, headline_labels

CELL = ["suite", "fidelity", "target", "algorithm"]
IMPROPER_MARK = "†"
#: a table cell shows the median beside the mean from this many seeds on (the median of 1 or 2 is the mean)
MIN_SEEDS_MEDIAN = 3
#: outcomes in the order ``outcomes`` lists them; any other status follows, by name
OUTCOMES = ("ok", "runaway", "diverged", "timeout")


#: metrics measured under a sample-quality protocol (the ``protocol`` column of their rows)
PROTOCOL_METRICS = re.compile(r"(fid|kid|is)_.*|out_of_range_frac")
#: the settings label of a cell with declared deviations (bench.suite.PAPER_WITH_DEVIATIONS)
PAPER_WITH_DEVIATIONS = "paper, with deviations"


def protocol_tag(protocol: str) -> str:
    """A short name of a protocol (its JSON): 'p' and 6 hex digits of its sha1; 'unstated' for rows without one."""
    return "p" + hashlib.sha1(protocol.encode()).hexdigest()[:6] if protocol else "unstated"


def _protocols(results: pd.DataFrame) -> pd.Series:
    if "protocol" not in results.columns:
        return pd.Series("", index=results.index)
    return results["protocol"].fillna("").astype(str)


def by_protocol(results: pd.DataFrame) -> pd.DataFrame:
    """The rows with every sample-quality value that shares its (target, metric) with a value of another protocol
    renamed ``metric @<protocol_tag>``, so that no mean, table cell or paired difference mixes protocols. Rows whose
    (target, metric) has one protocol keep their name."""
    if results.empty:
        return results
    sq = results["metric"].astype(str).str.fullmatch(PROTOCOL_METRICS.pattern)
    if not sq.any():
        return results
    proto = _protocols(results)
    sub = results[sq].assign(_p=proto[sq])
    several = sub.groupby(["target", "metric"])["_p"].transform("nunique") > 1
    if not several.any():
        return results
    idx = several[several].index
    out = results.copy()
    out.loc[idx, "metric"] = [f"{m} @{protocol_tag(p)}" for m, p in zip(out.loc[idx, "metric"], proto[idx],
                                                                        strict=True)]
    return out


def protocol_fields(protocol: str) -> dict:
    """A stored protocol (JSON of metrics.sample_quality.QualityProtocol.as_dict()) by field name, without its
    prefix."""
    return {k.split("_", 1)[1]: v for k, v in json.loads(protocol).items()} if protocol else {}


def protocols_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per target and sample-quality metric (as the other tables name it): the protocol it was measured under
    (extractor, generated and reference image counts, reference split, image shape and range) and its runs."""
    res = by_protocol(results)
    keep = res["metric"].astype(str).str.match(r"(fid_(?!n_)|kid_.*_mean|is_.*_mean)")
    if not keep.any():
        return pd.DataFrame()
    rows = []
    for (target, metric, proto), g in res[keep].assign(_p=_protocols(res)[keep]).groupby(["target", "metric", "_p"]):
        d = protocol_fields(proto)
        rows.append({"target": target, "metric": metric, "protocol": protocol_tag(proto),
                     "extractor": d.get("extractor", ""), "n_generated": d.get("n_gen", ""),
                     "n_reference": d.get("n_ref", ""), "reference_split": d.get("reference_split", ""),
                     "image_shape": str(d.get("image_shape", "")), "value_range": str(d.get("value_range", "")),
                     "runs": g.drop_duplicates(KEY).shape[0]})
    return pd.DataFrame(rows).set_index(["target", "metric"])


def deviation_notes(results: pd.DataFrame) -> list[str]:
    """One footnote per cell labelled "paper, with deviations": what it does differently from the paper (the
    suite file's list and the stand-in networks, stored with every row)."""
    if "deviations" not in results.columns or "settings" not in results.columns:
        return []
    cells = results[results["settings"] == PAPER_WITH_DEVIATIONS].drop_duplicates(["target", "algorithm"])
    notes = []
    for r in cells.sort_values(["target", "algorithm"]).itertuples():
        devs = json.loads(r.deviations) if isinstance(r.deviations, str) and r.deviations else []
        notes.append(f"{r.algorithm}/{r.target}, {PAPER_WITH_DEVIATIONS}: " + "; ".join(devs))
    return notes


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
    """Every metric: mean, standard deviation, 95 % CI half-width and median over seeds, per
    suite/fidelity/target/algorithm. Only finished ("ok") runs enter; density metrics of improper runs are left
    out and counted in ``n_improper`` (``n_seeds`` counts the seeds in the mean). Sample-quality values of
    different protocols are kept apart (``by_protocol``)."""
    results = by_protocol(results)
    ok = _flag_improper(ok_rows(results), results)
    keys = [*CELL, "metric"]
    n_imp = ok.groupby(keys)["_improper"].sum().rename("n_improper")
    g = ok[~ok["_improper"]].groupby(keys)["value"]
    out = g.agg(mean="mean", std="std", median="median", n_seeds="count")
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


def fmt_cell(mean, ci, n_improper=0, n_total=0, median=float("nan"), n_seeds=0) -> str:
    """'mean ± CI half-width' (4 and 2 significant digits), then '(med m)' when the mean is over at least
    MIN_SEEDS_MEDIAN seeds, '†k/n' when k of n seeds are improper and left out, blank when there is nothing to
    show."""
    mark = f" {IMPROPER_MARK}{int(n_improper)}/{int(n_total)}" if n_improper else ""
    if pd.isna(mean):
        return f"improper{mark}" if n_improper else ""
    med = f" (med {median:.3g})" if n_seeds >= MIN_SEEDS_MEDIAN and not pd.isna(median) else ""
    return f"{mean:.4g}" + ("" if pd.isna(ci) else f" ± {ci:.2g}") + med + mark


def _cells(s: pd.DataFrame) -> pd.Series:
    return pd.Series([fmt_cell(r.mean, r.ci95, r.n_improper, r.n_seeds + r.n_improper, r.median, r.n_seeds)
                      for r in s.itertuples()], index=s.index, dtype=object)


def outcomes(results: pd.DataFrame, by=("target", "algorithm")) -> pd.Series:
    """Per ``by`` group: how its runs ended, e.g. '3 ok, 1 runaway' ('4 ok' when all finished); outcomes in
    OUTCOMES order, any other status after them by name."""
    runs = results.drop_duplicates(KEY)
    counts = runs.groupby([*by, "status"]).size()

    def line(c: pd.Series) -> str:
        c = c.droplevel(list(range(len(by))))
        order = [o for o in OUTCOMES if o in c.index] + sorted(set(c.index) - set(OUTCOMES))
        return ", ".join(f"{int(c[o])} {o}" for o in order if c[o])

    return counts.groupby(level=list(range(len(by)))).apply(line).rename("runs")


MEDIAN_NOTE = (f"(med m): the median over the same seeds as the mean (from {MIN_SEEDS_MEDIAN} seeds); runs: how "
               "the runs ended; only 'ok' runs enter the means (runaway: the energy ran away, see docs/choices.md)")


IMPROPER_NOTE = (f"{IMPROPER_MARK}k/n: k of the n seeds' models are improper (they leak mass out of the evaluation "
                 "box); their density metrics are left out of the mean")


def paired_differences(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per target, metric and algorithm: the mean over seeds of (algorithm - reference), paired by seed
    (seed s shares its data, initial parameters and chains across algorithms), its 95 % CI, whether the CI
    excludes 0 (``significant``) and the table's flag ("n.s." where it does not). Only seeds where both
    finished (and, for density metrics, both models are proper) enter; sample-quality values pair only under one
    protocol (``by_protocol``)."""
    results = by_protocol(results)
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
    front = pd.DataFrame({"settings": settings.groupby(level=[0, 1]).agg("/".join), "seeds": seeds,
                          "runs": outcomes(results)})
    leak = s[s["metric"] == LEAK_METRIC].set_index(["target", "algorithm"])["mean"]
    if len(leak):
        front["leak"] = leak.map("{:.2g}".format)
    out = front.join(wide, how="right").fillna("")
    notes = [MEDIAN_NOTE, IMPROPER_NOTE if (shown["n_improper"] > 0).any() else "",
             "leak: mean fraction of the model's mass outside the evaluation box" if len(leak) else "",
             "rhat_det: R-hat of deterministic evaluation chains (no noise): the spread of their starting "
             "points, not mixing" if "rhat_det" in out.columns else "", *deviation_notes(results)]
    return _with_notes(out, notes)


def status_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Runs per outcome (ok, runaway, diverged, timeout), the failure rate (every outcome but ok) and the improper
    models, per algorithm and target."""
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


def published_columns(spec: dict) -> list[bool]:
    """Per column of a paper table: whether the paper gives a number for it. A column it gives none for (e.g. a
    second reading of its metric, shown beside the one its numbers match) gets no published column."""
    return [any(row[i] is not None for row in spec["published"].values()) for i in range(len(spec["columns"]))]


def paper_table(results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Rows: algorithms (measured or published). For each (target, metric) column of the paper's table: the
    measured 'mean ± 95 % CI' over seeds and, beside it, the published value (blank where there is none);
    ``settings``: where the measured row's settings come from; ``seeds``: the fewest seeds behind a measured
    value of the row. Notes warn when the measured numbers are not at the paper's settings, and carry the
    table's own footnotes (``spec["notes"]``: per algorithm, why its row does or does not reproduce) for the
    algorithms measured."""
    s = summary(results)
    algos = sorted(set(s["algorithm"]) | set(spec["published"]))
    labels = spec.get("labels") or [t for t, _ in spec["columns"]]
    settings = settings_of(results)
    runs = outcomes(results)
    rows, used = [], set()
    has_published = published_columns(spec)
    for a in algos:
        row, seeds, where = {"algorithm": a}, [], set()
        published_row = spec["published"].get(a, [None] * len(spec["columns"]))
        for (t, metric), label, pub, shown in zip(spec["columns"], labels, published_row, has_published, strict=True):
            hit = s[(s["algorithm"] == a) & (s["target"] == t) & (s["metric"] == metric)]
            row[label] = _cells(hit).iloc[0] if len(hit) else ""
            if shown:
                row[f"{label} [{spec['source']}]"] = _fmt_published(pub)
            if len(hit):
                seeds.append(int(hit["n_seeds"].iloc[0] + hit["n_improper"].iloc[0]))
                where |= set(settings[(settings.index.get_level_values("algorithm") == a)
                                      & (settings.index.get_level_values("target") == t)])
        row["settings"] = "/".join(sorted(where))
        row["seeds"] = min(seeds) if seeds else ""
        # failed runs of the table's targets (the means are over the 'ok' ones)
        failed = [f"{t}: {runs[(t, a)]}" for t in dict.fromkeys(t for t, _ in spec["columns"])
                  if (t, a) in runs.index and runs[(t, a)] != f"{_n_runs(results, t, a)} ok"]
        row["failed runs"] = "; ".join(failed)
        used |= where
        rows.append(row)
    out = pd.DataFrame(rows).set_index("algorithm")
    if not out["failed runs"].astype(bool).any():
        out = out.drop(columns="failed runs")
    # the note on medians and outcomes where a cell shows a median or a run failed
    shows = out.astype(str).apply(lambda c: c.str.contains(r"\(med ")).to_numpy().any()
    notes = [MEDIAN_NOTE] if shows or "failed runs" in out.columns else []
    not_paper = sorted(used - {"paper"})
    if not_paper:
        notes.append(f"WARNING: measured numbers at {', '.join(not_paper)} settings stand beside published ones "
                     f"({spec['source']}): they are not the paper's settings and not directly comparable")
    if PAPER_WITH_DEVIATIONS in used:
        shown = results[results["algorithm"].isin(out.index)
                        & results["target"].isin({t for t, _ in spec["columns"]})]
        notes += deviation_notes(shown)
    notes += _protocol_notes(results, spec)
    if "extrapolated" in used:
        notes.append("extrapolated: the paper did not run this algorithm on this target; the settings are this "
                     "suite's extrapolation of the paper's")
    if (s[s["metric"].isin([m for _, m in spec["columns"]])]["n_improper"] > 0).any():
        notes.append(IMPROPER_NOTE)
    # a row's diagnosis (bench/published.py "notes"), for its algorithms run here (diverged ones too: a diverged
    # cell has no value in the table, so its note is the only place that says why)
    ran = set(results["algorithm"])
    notes += [f"{a}: {n}" for a, n in spec.get("notes", {}).items() if a in ran]
    return _with_notes(out, notes)


def _n_runs(results: pd.DataFrame, target: str, algorithm: str) -> int:
    runs = results[(results["target"] == target) & (results["algorithm"] == algorithm)]
    return len(runs.drop_duplicates(KEY))


def _protocol_notes(results: pd.DataFrame, spec: dict) -> list[str]:
    """For each sample-quality column of a paper table: the protocol of its measured values, or that they were
    measured under several and are left out (``by_protocol``)."""
    res = by_protocol(results)
    notes = []
    for t, metric in spec["columns"]:
        if not PROTOCOL_METRICS.fullmatch(metric):
            continue
        apart = sorted(set(res.loc[(res["target"] == t) & res["metric"].str.startswith(metric + " @"), "metric"]))
        if apart:
            notes.append(f"{t} {metric}: measured under {len(apart)} protocols, never compared with each other: left "
                         f"out here, shown apart as {', '.join(apart)} (table sample_quality_protocols)")
            continue
        rows = res[(res["target"] == t) & (res["metric"] == metric)]
        protos = set(_protocols(rows)) - {""}
        if len(protos) == 1:
            d = protocol_fields(protos.pop())
            notes.append(f"{t} {metric}: {d['extractor']}, {d['n_gen']} generated vs {d['n_ref']} reference images "
                         f"of the {d['reference_split']} split")
    return notes


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
