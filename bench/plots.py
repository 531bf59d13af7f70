"""Figures from a results folder (seaborn / matplotlib, written as PNG). Every figure's title states the suite,
fidelity and seed count; models that leak mass out of the evaluation box (``improper``) are marked.

- densities.png: the learned EBM log-density per algorithm x target beside the true one (000 Fig. 2/3), one
  colour scale (and colour bar) per target column.
- weights_over_training.png: the EBM weight of the heaviest mode over training and the mode-weight MSE
  over training, one column per target (000 Fig. 1 right for the two-mode target).
- training_curves.png: one row per target, one panel per metric of CURVES (003 Fig. 1), one line per algorithm.
- flow_panels.png: 002 Fig. 1 per target and algorithm: data, generator samples, -E and the ODE flow's
  log-density (eq. 6), for cells that saved ``flow_grid_log_density`` (002's ODE-flow algorithms).

Curves are the mean over seeds with a min-max band over seeds (``curve_frame``), never pooled over targets.
Legends sit below the panels so that a single-target figure keeps its shape.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

import datasets  # noqa: E402
from bench import plots_highdim, plots_images, tables  # noqa: E402
from bench.figures import (  # noqa: E402
    IMPROPER_COLOUR,
    curve_frame,
    draw_band,
    improper_cells,
    legend_below,
    mark_improper,
    palette,
    save,
)
from bench.store import ResultStore  # noqa: E402
from metrics.density import grid  # noqa: E402

#: log-densities are drawn from the maximum down to this many nats below it
FLOOR_NATS = 12.0


def density_panels(store: ResultStore, results: pd.DataFrame, path: Path) -> Path | None:
    """Learned log-densities (first finished seed) below the true one, per target column. All panels of a
    column share one colour scale, from the true log-density's maximum down to FLOOR_NATS below it, with its
    colour bar; improper models are labelled and framed in red."""
    runs = results[results["status"] == "ok"].sort_values("seed").drop_duplicates(
        ["suite", "fidelity", "target", "algorithm"])
    imp = tables.improper_seeds(results)
    cells = {}
    for r in runs.itertuples():
        z = store.artifact(r._asdict())
        if z is not None and "grid_log_density" in z:
            key = (r.suite, r.fidelity, r.target, r.algorithm, r.seed)
            cells[(r.algorithm, r.target)] = (z["grid_log_density"], bool(imp.get(key, False)), r.seed)
    if not cells:
        return None
    algos = sorted({a for a, _ in cells})
    targets = sorted({t for _, t in cells})
    fig, axes = plt.subplots(len(algos) + 1, len(targets), figsize=(2.9 * len(targets) + 0.6, 2.5 * (len(algos) + 1)),
                             squeeze=False, layout="constrained")
    for j, t in enumerate(targets):
        target = datasets.get_target(t)
        n = next(v[0].shape[0] for (a, tt), v in cells.items() if tt == t)
        pts, _ = grid(target.box, n)
        truth = target.log_prob(pts.double()).reshape(n, n).numpy() if target.has_density else None
        rows = [("p* (true)", truth, False)] + [
            (a, *cells[(a, t)][:2]) if (a, t) in cells else (a, None, False) for a in algos]
        # the column's scale: from the true log-density's maximum (else the models') down FLOOR_NATS
        top = float(np.nanmax(truth)) if truth is not None else max(float(np.nanmax(v)) for _, v, _ in rows
                                                                    if v is not None)
        extent = [*target.box[0], *target.box[1]]
        im = None
        for i, (label, logp, bad) in enumerate(rows):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if logp is not None:
                im = ax.imshow(np.clip(logp, top - FLOOR_NATS, top), origin="lower", extent=extent, cmap="viridis",
                               vmin=top - FLOOR_NATS, vmax=top, aspect="auto")
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            if bad:
                ax.text(0.5, 0.92, "IMPROPER", ha="center", va="top", transform=ax.transAxes, fontsize=8,
                        color=IMPROPER_COLOUR, weight="bold")
                for sp in ax.spines.values():
                    sp.set(color=IMPROPER_COLOUR, lw=2)
            if i == 0:
                ax.set_title(t, fontsize=10)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
        if im is not None:
            fig.colorbar(im, ax=axes[:, j], location="bottom", shrink=0.8, aspect=25, label="log-density (nats)")
    fig.suptitle(f"Learned EBM log-densities (first seed) and the true one: {tables.describe(results)}\n"
                 f"one colour scale per column: {FLOOR_NATS:g} nats below the true maximum", fontsize=10)
    save(fig, path)
    return path


def weights_over_training(traces: pd.DataFrame, path: Path, x: str = "iteration",
                          results: pd.DataFrame | None = None) -> Path | None:
    """Top row: the EBM weight of each target's heaviest mode over training (000 Fig. 1 right follows the
    top-right mode of the 2:1 mixture), true weight dashed. Bottom row: the EBM's mode-weight MSE over
    training (log scale). Lines: mean over seeds; bands: min-max over seeds."""
    tr = traces[traces["metric"].astype(str).str.match(r"ebm_weight\[\d+\]")]
    if tr.empty:
        return None
    tr = tr.assign(mode=tr["metric"].str.extract(r"\[(\d+)\]")[0].astype(int))
    targets = sorted(tr["target"].unique())
    colours = palette(tr["algorithm"])
    improper = improper_cells(results)
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(2, len(targets), figsize=(max(3.6 * len(targets) + 0.8, 6.5), 6.4), squeeze=False,
                             layout="constrained")
    for j, t in enumerate(targets):
        truth = datasets.get_target(t).mode_weights.numpy()
        heavy = int(np.argmax(truth))
        d = tr[tr["target"] == t]
        draw_band(axes[0, j], curve_frame(d[d["mode"] == heavy], x), x, colours)
        axes[0, j].axhline(truth[heavy], color="k", lw=1, ls="--")
        axes[0, j].set(title=t, ylabel=f"EBM weight of mode {heavy}", ylim=(-0.02, 1.02))
        err = d.assign(sq=(d["value"] - truth[d["mode"].to_numpy()]) ** 2)
        mse = err.groupby(["target", "algorithm", "seed", x], as_index=False)["sq"].mean()
        draw_band(axes[1, j], curve_frame(mse, x, "sq"), x, colours)
        axes[1, j].set(yscale="log", ylabel="EBM mode-weight MSE")
        mark_improper(axes[0, j], t, improper)
        for ax in axes[:, j]:
            ax.set_xlabel("energy-gradient evaluations" if x == "grad_evals" else x)
            if x == "grad_evals":
                ax.set_xscale("log")
    legend_below(fig, colours, [plt.Line2D([], [], color="k", ls="--", label="true weight")])
    fig.suptitle(f"Mode weights over training: {tables.describe(traces)}; mean and min-max band over seeds",
                 fontsize=10)
    save(fig, path)
    return path


#: metrics drawn over training when present in traces.csv (003 Fig. 1: p_k, means, KL and its estimate)
CURVES = [
    ("ebm_weight[0]", "EBM weight of mode 0", "linear"),
    ("param_error[a]", "|a - a*|", "log"),
    ("param_error[b]", "|b - b*|", "log"),
    ("kl", "KL(p*||p): exact, estimate (- -)", "symlog"),
    ("ess", "weight ESS / N", "linear"),
    ("n_resamples", "resampling events", "linear"),
]


def training_curves(traces: pd.DataFrame, path: Path, x: str = "iteration",
                    results: pd.DataFrame | None = None) -> Path | None:
    """One row per target, one panel per metric of CURVES present in the traces, one line per algorithm (mean
    and min-max band over seeds: ``curve_frame``); the Jarzynski KL estimate (003 eq. 12) is drawn dashed
    over the exact KL; the true weight of mode 0 dashed black."""
    present = [c for c in CURVES if (traces["metric"] == c[0]).any()]
    if not present:
        return None
    targets = sorted(traces[traces["metric"].isin([c[0] for c in present])]["target"].unique())
    colours = palette(traces["algorithm"])
    improper = improper_cells(results)
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(len(targets), len(present), figsize=(3.6 * len(present) + 0.8, 2.9 * len(targets) + 1.0),
                             squeeze=False, layout="constrained")
    for i, t in enumerate(targets):
        tt = traces[traces["target"] == t]
        target = datasets.get_target(t)
        for j, (metric, label, scale) in enumerate(present):
            ax = axes[i, j]
            draw_band(ax, curve_frame(tt[tt["metric"] == metric], x), x, colours)
            if metric == "kl":
                est = tt[tt["metric"] == "kl_estimate"]
                if len(est):
                    draw_band(ax, curve_frame(est, x), x, colours, ls="--")
            if metric == "ebm_weight[0]" and target.has_modes:
                ax.axhline(float(target.mode_weights[0]), color="k", lw=1, ls="--")
            ax.set(ylabel=label, yscale=scale, xlabel="energy-gradient evaluations" if x == "grad_evals" else x)
            if x == "grad_evals":
                ax.set_xscale("log")
            if j == 0:
                ax.set_title(t, loc="left", fontsize=10, weight="bold")
                mark_improper(ax, t, improper)
    legend_below(fig, colours)
    fig.suptitle(f"Training curves: {tables.describe(traces)}; mean and min-max band over seeds", fontsize=10)
    save(fig, path)
    return path


def flow_panels(store: ResultStore, results: pd.DataFrame, path: Path, floor: float = FLOOR_NATS) -> Path | None:
    """002 Fig. 1, one row per (target, algorithm) with a saved ODE-flow density (first seed): column 1 samples
    of p*, column 2 the generator's samples (the cell's ``negatives``), column 3 -E (the EBM's unnormalised
    log-density; the runner saves it normalised on the grid, which shifts it by log Z only), column 4 the
    flow's log-density (eq. 6). The two log-densities of a row share one colour scale (and bar), from their
    maximum down to ``floor`` nats below it."""
    runs = results[results["status"] == "ok"].drop_duplicates(["suite", "fidelity", "target", "algorithm"])
    rows = []
    for r in runs.sort_values(["target", "algorithm", "seed"]).itertuples():
        z = store.artifact(r._asdict())
        if z is not None and "flow_grid_log_density" in z:
            rows.append((r.target, r.algorithm, z))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 4, figsize=(11.2, 2.6 * len(rows) + 0.6), squeeze=False, layout="constrained")
    titles = ["data", "generator samples", "-E (EBM)", "ODE-flow log-density"]
    for i, (t, a, art) in enumerate(rows):
        target = datasets.get_target(t)
        extent = [*target.box[0], *target.box[1]]
        data = target.test_set(2000).numpy()
        neg = art.get("negatives")
        panels = [("scatter", data), ("scatter", neg), ("image", art.get("grid_log_density")),
                  ("image", art["flow_grid_log_density"])]
        top = max(float(np.nanmax(v)) for kind, v in panels if kind == "image" and v is not None)
        im = None
        for j, (kind, v) in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if v is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            elif kind == "scatter":
                ax.scatter(v[:, 0], v[:, 1], s=1, alpha=0.5)
                ax.set_xlim(*target.box[0])
                ax.set_ylim(*target.box[1])
            else:
                im = ax.imshow(np.clip(v, top - floor, top), origin="lower", extent=extent, cmap="viridis",
                               vmin=top - floor, vmax=top, aspect="auto")
            if i == 0:
                ax.set_title(titles[j])
        axes[i, 0].set_ylabel(f"{t}\n{a}", fontsize=8)
        if im is not None:
            fig.colorbar(im, ax=axes[i, 2:], shrink=0.9, label="nats")
    fig.suptitle(f"002 Fig. 1: data, generator samples, -E and the ODE flow's log-density (first seed): "
                 f"{tables.describe(results)}", fontsize=10)
    save(fig, path)
    return path


def missing_artifacts(store: ResultStore, results: pd.DataFrame) -> list[str]:
    """'target/algorithm/seed' of the finished runs whose figures need their cell artifact (``cells/*.npz``: the
    2-D densities and flow panels, the image sample grids) and that have none: a results folder of committed
    tables (results/reproduction/) keeps no artifacts."""
    runs = results[results["status"] == "ok"].drop_duplicates(["suite", "fidelity", "target", "algorithm", "seed"])
    needs = {t for t in runs["target"].unique()
             if datasets.get_target(t).dim == 2 or datasets.get_target(t).has("image")}
    return [f"{r.target}/{r.algorithm}/seed {r.seed}" for r in runs.itertuples()
            if r.target in needs and not store.artifact_path(r._asdict()).exists()]


def warn_missing_artifacts(store: ResultStore, results: pd.DataFrame) -> None:
    missing = missing_artifacts(store, results)
    if missing:
        print(f"bench: warning: {len(missing)} finished runs have no cell artifact in {store.out / 'cells'} (e.g. "
              f"{missing[0]}): the figures drawn from artifacts (learned densities, flow panels, sample grids) leave "
              "them out; the curves and tables come from results.csv / traces.csv. Re-run those cells (--force) to "
              "draw them", file=sys.stderr)


def make_all(store: ResultStore, x: str = "iteration") -> list[Path]:
    """All figures of a results folder; ``x = "grad_evals"`` draws the curves against work instead of
    iterations (files get a ``_vs_work`` suffix)."""
    results = store.results()
    figs = store.out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    traces = store.traces()
    if x == "grad_evals":  # the same curves against work
        if "grad_evals" not in traces.columns:
            return []
        made = [weights_over_training(traces, figs / "weights_over_training_vs_work.png", x, results),
                training_curves(traces, figs / "training_curves_vs_work.png", x, results)]
        return ([p for p in made if p is not None] + plots_highdim.make(traces, figs, x)
                + plots_images.make(store, results, traces, figs, x))
    warn_missing_artifacts(store, results)
    made = [density_panels(store, results, figs / "densities.png"),
            weights_over_training(traces, figs / "weights_over_training.png", "iteration", results),
            training_curves(traces, figs / "training_curves.png", "iteration", results),
            flow_panels(store, results, figs / "flow_panels.png")]
    return ([p for p in made if p is not None] + plots_highdim.make(traces, figs)
            + plots_images.make(store, results, traces, figs))


__all__ = ["make_all"]
