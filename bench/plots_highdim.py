"""Figures of mixing and of the negatives' weights along training (000 §4, App. C.5, Fig. 6), from traces.csv
(seaborn, PNG), drawn for every target whose traces hold their metrics:

- rhat_over_training.png: 000 Fig. 6, the max R-hat of the evaluation chains along training (``rhat_every``), one
  panel per target (ordered by dimension), one line per algorithm (mean and min-max band over seeds), log scale,
  the 1.1 threshold dashed; noise-free samplers (``max_rhat_deterministic``) are drawn dotted: not a mixing figure;
  where the traces hold ``chain_mode_stay``, a second row shows it on the same chains (1: every chain stays in one
  mode, so a large R-hat is trapping; lower: the chains move between modes);
- neg_weights_over_training.png: the mode weights of the negatives along training, one panel per target and
  algorithm, one line per mode, the true weights dashed: targets whose EBM weights are not traced (no grid, no
  exact model), where the negatives are the view of the weights along training.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

import datasets  # noqa: E402
from bench.figures import save  # noqa: E402
from bench.tables import describe  # noqa: E402
from bench.tables_highdim import holding  # noqa: E402


def rhat_over_training(traces: pd.DataFrame, path: Path, x: str = "iteration") -> Path | None:
    tr = traces[traces["metric"].isin(["max_rhat", "max_rhat_deterministic"])]
    if tr.empty:
        return None
    targets = sorted(tr["target"].unique(), key=lambda t: (datasets.get_target(t).dim, t))
    order = sorted(tr["algorithm"].unique())
    palette = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
    stay = traces[(traces["metric"] == "chain_mode_stay") & traces["target"].isin(targets)]
    rows = 2 if len(stay) else 1
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(rows, len(targets), figsize=(4.4 * len(targets) + 2.0, 3.8 * rows), squeeze=False)
    for j, t in enumerate(targets):
        ax = axes[0, j]
        for metric, style in (("max_rhat", "-"), ("max_rhat_deterministic", ":")):
            d = tr[(tr["target"] == t) & (tr["metric"] == metric)]
            if len(d):
                sns.lineplot(data=d, x=x, y="value", hue="algorithm", hue_order=order, palette=palette,
                             errorbar=("pi", 100), ax=ax, linestyle=style, legend=j == len(targets) - 1
                             and metric == "max_rhat")
        ax.axhline(1.1, color="k", lw=1, ls="--")
        ax.set(title=f"{t} (d = {datasets.get_target(t).dim})", yscale="log", ylabel="max R-hat")
        if rows == 2:
            ax = axes[1, j]
            d = stay[stay["target"] == t]
            if len(d):
                sns.lineplot(data=d, x=x, y="value", hue="algorithm", hue_order=order, palette=palette,
                             errorbar=("pi", 100), ax=ax, legend=False)
            ax.axhline(1.0, color="0.6", lw=0.8, ls="--", zorder=0)
            ax.set(ylim=(0, 1.05), ylabel="chain_mode_stay (1: trapped)")
    if axes[0, -1].get_legend() is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Max R-hat of the evaluation chains along training, as 000 Fig. 6 ({describe(tr)}; band: "
                 "min-max over seeds)\n(dotted: noise-free sampler, not a mixing figure; dashed: 1.1)"
                 + ("\nbelow: mean largest share of a chain's draws in one mode (1: chains stay in their modes)"
                    if rows == 2 else ""), fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return path


def neg_weights_over_training(traces: pd.DataFrame, path: Path, x: str = "iteration") -> Path | None:
    tr = traces[~traces["target"].isin(holding(traces, r"ebm_weight\[\d+\]"))]
    tr = tr[tr["metric"].astype(str).str.match(r"neg_weight\[\d+\]")]
    if tr.empty:
        return None
    tr = tr.assign(mode=tr["metric"].str.extract(r"\[(\d+)\]")[0].astype(int))
    panels = sorted(tr.groupby(["target", "algorithm"]).groups)
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, (t, a) in zip(axes.flat, panels, strict=False):
        d = tr[(tr["target"] == t) & (tr["algorithm"] == a)]
        sns.lineplot(data=d, x=x, y="value", hue="mode", palette="deep", errorbar=("pi", 100), ax=ax,
                     legend=(t, a) == panels[0])
        for w in datasets.get_target(t).mode_weights.tolist():
            ax.axhline(w, color="k", lw=0.8, ls="--")
        ax.set(title=f"{a} / {t}", ylabel="negatives' mode weight", ylim=(-0.02, 1.02))
    fig.suptitle(f"Mode weights of the negatives over training ({describe(tr)}; band: min-max over seeds; "
                 "dashed: true weights)", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return path


def make(traces: pd.DataFrame, figs: Path, x: str = "iteration") -> list[Path]:
    suffix = "" if x == "iteration" else "_vs_work"
    made = [rhat_over_training(traces, figs / f"rhat_over_training{suffix}.png", x),
            neg_weights_over_training(traces, figs / f"neg_weights_over_training{suffix}.png", x)]
    return [p for p in made if p is not None]
