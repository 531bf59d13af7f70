"""Tables of the image suites (003 §4.2, Fig. 3): per-class weight errors of generated images.

- ``class_weights``: per image target and algorithm, the relative weight error |w_k - w*_k| / w*_k of each class
  (``label_weight_relerr[k]``, 003 Fig. 3), their mean, the share of generated images the classifier puts outside
  the target's classes, and the classifier's held-out accuracy; 'mean ± 95 % CI' over seeds. A '003 Fig. 3'
  column gives the paper's values where its text states them: it states none (Fig. 3 is a plot; its text says
  only that Jarzynski recovers the weights and PCD does not), so the column says so rather than reading numbers
  off a figure.
- ``class_weights_paired``: the mean per-class relative error of each algorithm minus the reference
  algorithm's (the suite's ``reference``, PCD), paired by seed, with its 95 % CI.
"""

from __future__ import annotations

import pandas as pd

from bench.tables import paired_differences, summary

#: 003 Fig. 3's per-class relative weight errors as its text states them (None: not stated in the text)
PAPER_FIG3: dict[str, dict[str, float | None]] = {"jarzynski": {}, "pcd": {}}
PAPER_NOTE = ("003 Fig. 3: no values stated in the text (a plot only); the text says Jarzynski recovers the "
              "three weights and PCD does not")

COLUMNS = ["label_weight_relerr_mean", "off_class_share", "classifier_accuracy"]


def _images(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["metric"].astype(str).str.startswith("label_weight")
                   | results["metric"].isin(COLUMNS)]


def class_weights_table(results: pd.DataFrame) -> pd.DataFrame:
    img = _images(results)
    if img.empty:
        return pd.DataFrame()
    s = summary(img)
    s = s[s["metric"].str.match(r"label_weight_relerr\[\d+\]") | s["metric"].isin(COLUMNS)
          | s["metric"].str.match(r"label_weight\[\d+\]")]
    cell = [f"{m:.3g}" + ("" if pd.isna(c) else f" ± {c:.2g}") for m, c in zip(s["mean"], s["ci95"], strict=True)]
    wide = s.assign(cell=cell).pivot_table(index=["target", "algorithm"], columns="metric", values="cell",
                                           aggfunc="first")
    order = sorted(c for c in wide.columns if c.startswith("label_weight["))
    order += sorted(c for c in wide.columns if c.startswith("label_weight_relerr["))
    order += [c for c in COLUMNS if c in wide.columns]
    wide = wide[order].fillna("")
    wide["seeds"] = s.groupby(["target", "algorithm"])["n_seeds"].max()
    wide["003 Fig. 3"] = [("not stated" if a in PAPER_FIG3 else "") for _, a in wide.index]
    wide.attrs["notes"] = [PAPER_NOTE, "label_weight[k]: weight of class k among generated images (Jarzynski: its "
                           "walkers' normalised weights summed per label, 003 §4.2); relerr = |w_k - w*_k| / w*_k"]
    return wide


def paired_table(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    img = results[results["metric"].astype(str).str.match(r"label_weight_relerr(\[\d+\]|_mean)")]
    if img.empty or reference not in set(img["algorithm"]):
        return pd.DataFrame()
    d = paired_differences(img, reference)
    if d.empty or d["n_pairs"].max() < 2:
        return pd.DataFrame()
    return d.drop(columns=["significant"]).set_index(["target", "metric", "algorithm"])


def sections(results: pd.DataFrame, reference: str | None) -> list[tuple[str, str, pd.DataFrame]]:
    out = []
    t = class_weights_table(results)
    if len(t):
        out.append(("class_weights", "Per-class weight of generated images read by the classifier, relative error "
                    "(003 Fig. 3)", t))
        if reference:
            p = paired_table(results, reference)
            if len(p):
                out.append(("class_weights_paired", f"Per-class relative weight error: difference to {reference}, "
                            "paired by seed, mean and 95 % CI (n.s.: the CI contains 0)", p))
    return out
