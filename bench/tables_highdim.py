"""Tables of mixing and of the weights of models that cannot be integrated (000 §4, App. C.5: the high-dimensional
mixture, beside 000 Table 2 in bench/published.py), made for every target whose results hold their metrics:

- mixing: R-hat (rank-normalised split and classic), whether the evaluation chains stay in their modes
  (``chain_mode_stay``), their bulk / tail ESS, the training
  sampler's acceptance rates and the audit's own R-hat, as 'mean ± 95 % CI' over seeds: targets with any of them;
- weights: the negatives' mode weights beside the audited EBM's own weights (bench/audit.py) and the truth,
  so that "the EBM is wrong" (audit vs p*) and "the training sampler cannot see it" (negatives vs audit) are
  separate columns: targets with an audit, or with the negatives' weights but no EBM weights (no grid, no exact
  model: the negatives are then the only view of the weights). An audit whose own R-hat exceeds ``AUDIT_RHAT_MAX``
  did not mix: its weights lean toward its proposal's equal weights, so the column ``audit_rhat>1.1`` counts such
  seeds ('k/n') and a note says so.
"""

from __future__ import annotations

import pandas as pd

import datasets
from bench.tables import ok_rows, summary

MIXING = ["max_rhat", "max_rhat_classic", "max_rhat_deterministic", "chain_mode_stay", "min_ess_bulk", "min_ess_tail",
          "local_accept", "global_accept", "audit_max_rhat", "audit_global_accept"]
WEIGHT_ERRORS = ["audit_weight_mse", "neg_weight_mse_vs_audit", "neg_weight_mse"]
#: an audit with a larger R-hat (max over dimensions) did not mix (ours: the common 1.1 threshold of Vehtari et al.)
AUDIT_RHAT_MAX = 1.1
AUDIT_FLAG = "audit_rhat>1.1"
AUDIT_NOTE = (f"{AUDIT_FLAG}: k/n of the seeds' audits did not mix (audit R-hat above {AUDIT_RHAT_MAX}, or none): "
              "their EBM weights lean toward the audit proposal's equal weights and are not the EBM's")


def audit_flags(results: pd.DataFrame) -> pd.Series:
    """Per (target, algorithm): 'k/n' where k of the n audited seeds have an audit R-hat above AUDIT_RHAT_MAX (or a
    non-finite one), '' where none has."""
    r = ok_rows(results)
    v = r[r["metric"] == "audit_max_rhat"].groupby(["target", "algorithm"])["value"]
    return v.agg(lambda x: f"{int((~(x <= AUDIT_RHAT_MAX)).sum())}/{len(x)}" if (~(x <= AUDIT_RHAT_MAX)).any() else "")


def _mean_ci(s: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    s = s[s["metric"].isin(metrics)]
    if s.empty:
        return pd.DataFrame()
    cell = [f"{m:.4g}" + ("" if pd.isna(c) else f" ± {c:.2g}") for m, c in zip(s["mean"], s["ci95"], strict=True)]
    wide = s.assign(cell=cell).pivot_table(index=["target", "algorithm"], columns="metric", values="cell",
                                           aggfunc="first")
    return wide[[m for m in metrics if m in wide.columns]].fillna("")


def holding(results: pd.DataFrame, pattern: str) -> set[str]:
    """The targets whose rows hold a metric matching the regular expression ``pattern``."""
    return set(results[results["metric"].astype(str).str.fullmatch(pattern)]["target"])


def weighed_by_samples(results: pd.DataFrame) -> set[str]:
    """Targets whose model's weights are seen through samples only: with an audit (``audit_weight[k]``), or with
    the negatives' weights but no EBM weights."""
    return (holding(results, r"audit_weight\[\d+\]")
            | (holding(results, r"neg_weight\[\d+\]") - holding(results, r"ebm_weight\[\d+\]")))


def mixing_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per target and algorithm: the mixing metrics (MIXING) as 'mean ± 95 % CI' over seeds, and the seeds."""
    s = summary(results[results["target"].isin(holding(results, "|".join(MIXING)))])
    out = _mean_ci(s, MIXING)
    if len(out):
        out["seeds"] = s.groupby(["target", "algorithm"])["n_seeds"].min()
    return out


def weights_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per target and algorithm, means over seeds: the negatives' weights (neg w_k), the audited EBM weights
    (EBM w_k) and their errors (wrt p* and wrt each other); a 'p* (true)' row per target; where an audit did not
    mix, the ``audit_rhat>1.1`` column ('k/n' seeds) and a note."""
    weighed = results[results["target"].isin(weighed_by_samples(results))]
    s = summary(weighed)
    w = s[s["metric"].str.match(r"(neg|audit)_weight\[\d+\]")]
    if w.empty:
        return pd.DataFrame()
    label = w["metric"].str.replace("audit_weight", "EBM w", regex=False).str.replace("neg_weight", "neg w",
                                                                                          regex=False)
    wide = w.assign(col=label.str.replace(r"\[(\d+)\]", r"\1", regex=True)).pivot_table(
        index=["target", "algorithm"], columns="col", values="mean")
    errors = s[s["metric"].isin(WEIGHT_ERRORS)].pivot_table(index=["target", "algorithm"], columns="metric",
                                                             values="mean")
    wide = wide.join(errors)
    truth = []
    for t in wide.index.get_level_values(0).unique():
        tw = datasets.get_target(t).mode_weights.tolist()
        truth.append({"target": t, "algorithm": "p* (true)", **{f"EBM w{k}": v for k, v in enumerate(tw)},
                      **{f"neg w{k}": v for k, v in enumerate(tw)}})
    flags = audit_flags(weighed)
    if (flags != "").any():
        wide[AUDIT_FLAG] = flags.reindex(wide.index).fillna("")
    out = pd.concat([wide, pd.DataFrame(truth).set_index(["target", "algorithm"])]).sort_index()
    if AUDIT_FLAG in out.columns:
        out[AUDIT_FLAG] = out[AUDIT_FLAG].fillna("")
        out.attrs["notes"] = [AUDIT_NOTE]
    return out


def sections(results: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(file name, title, table) of the tables whose metrics the results hold."""
    return [
        ("mixing", "Mixing of the evaluation chains (n_chains of the algorithm's own sampler, step size frozen) and "
         "of the audit, mean ± 95 % CI over seeds", mixing_table(results)),
        ("sample_weights", "Mode weights of the negatives (what the training sampler sees) and of the EBM itself "
         "(independent audit: flowMC with a mixture proposal), means over seeds, for targets whose EBM cannot be "
         "weighed on a grid or exactly", weights_table(results)),
    ]
