"""Figures from a results folder (seaborn / matplotlib, written as PNG).

- densities.png: the learned EBM density per algorithm x target beside the true density (000 Fig. 2/3).
- weights_over_training.png: the EBM weight of the heaviest mode over training and the mode-weight MSE
  over training, one column per target (000 Fig. 1 right for the two-mode target).
- flow_panels.png: 002 Fig. 1 per target and algorithm: data, generator samples, -E and the ODE flow's
  log-density (eq. 6), for cells that saved ``flow_grid_log_density`` (002's ODE-flow algorithms).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

import datasets  # noqa: E402
from bench import plots_highdim  # noqa: E402
from bench.store import ResultStore, atomic_write_bytes  # noqa: E402
from metrics.density import grid  # noqa: E402


def density_panels(store: ResultStore, results: pd.DataFrame, path: Path) -> Path | None:
    runs = results[results["status"] == "ok"].drop_duplicates(["suite", "fidelity", "target", "algorithm"])
    runs = runs.sort_values("seed")
    cells = {}
    for r in runs.itertuples():
        f = store.artifact_path(r._asdict())
        if f.exists():
            with np.load(f) as z:
                if "grid_log_density" in z:
                    cells[(r.algorithm, r.target)] = (z["grid_log_density"], z["box"])
    if not cells:
        return None
    algos = sorted({a for a, _ in cells})
    targets = sorted({t for _, t in cells})
    fig, axes = plt.subplots(len(algos) + 1, len(targets), figsize=(2.6 * len(targets), 2.6 * (len(algos) + 1)),
                             squeeze=False)
    for j, t in enumerate(targets):
        target = datasets.get_target(t)
        n = next(v[0].shape[0] for (a, tt), v in cells.items() if tt == t)
        pts, _ = grid(target.box, n)
        rows = [("p* (true)", target.log_prob(pts.double()).reshape(n, n).numpy() if target.has_density else None)]
        rows += [(a, cells[(a, t)][0] if (a, t) in cells else None) for a in algos]
        extent = [*target.box[0], *target.box[1]]
        for i, (label, logp) in enumerate(rows):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if logp is not None:
                ax.imshow(np.exp(logp), origin="lower", extent=extent, cmap="viridis", aspect="auto")
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            if i == 0:
                ax.set_title(t)
            if j == 0:
                ax.set_ylabel(label)
    fig.suptitle("Learned EBM densities (first seed) and the true density")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    _save(fig, path)
    return path


def weights_over_training(traces: pd.DataFrame, path: Path, x: str = "iteration") -> Path | None:
    """Top row: the EBM weight of each target's heaviest mode over training (000 Fig. 1 right follows the
    top-right mode of the 2:1 mixture), mean and min-max band over seeds, true weight dashed. Bottom row:
    the EBM's mode-weight MSE over training (log scale)."""
    tr = traces[traces["metric"].astype(str).str.match(r"ebm_weight\[\d+\]")]
    if tr.empty:
        return None
    tr = tr.assign(mode=tr["metric"].str.extract(r"\[(\d+)\]")[0].astype(int))
    targets = sorted(tr["target"].unique())
    order = sorted(tr["algorithm"].unique())
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(2, len(targets), figsize=(4.0 * len(targets), 6.2), squeeze=False)
    for j, t in enumerate(targets):
        truth = datasets.get_target(t).mode_weights.numpy()
        heavy = int(np.argmax(truth))
        d = tr[tr["target"] == t]
        top = d[d["mode"] == heavy]
        sns.lineplot(data=top, x=x, y="value", hue="algorithm", hue_order=order,
                     errorbar=("pi", 100), ax=axes[0, j], legend=j == len(targets) - 1)
        axes[0, j].axhline(truth[heavy], color="k", lw=1, ls="--")
        axes[0, j].set(title=t, ylabel=f"EBM weight of mode {heavy}", ylim=(-0.02, 1.02))
        err = d.assign(sq=(d["value"] - truth[d["mode"].to_numpy()]) ** 2)
        mse = err.groupby(["algorithm", "seed", x], as_index=False)["sq"].mean()
        sns.lineplot(data=mse, x=x, y="sq", hue="algorithm", hue_order=order,
                     errorbar=("pi", 100), ax=axes[1, j],
                     legend=False)
        axes[1, j].set(yscale="log", ylabel="EBM mode-weight MSE")
        if x == "grad_evals":
            for ax in axes[:, j]:
                ax.set(xscale="log", xlabel="energy-gradient evaluations")
    if axes[0, -1].get_legend() is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    _save(fig, path)
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


def training_curves(traces: pd.DataFrame, path: Path, truth: dict[str, float] | None = None,
                    x: str = "iteration") -> Path | None:
    """One panel per metric of CURVES present in the traces, one line per algorithm (mean and min-max band
    over seeds); the Jarzynski KL estimate (003 eq. 12) is drawn dashed over the exact KL."""
    present = [c for c in CURVES if (traces["metric"] == c[0]).any()]
    if not present:
        return None
    order = sorted(traces["algorithm"].unique())
    palette = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
    sns.set_theme(style="whitegrid")
    ncol = min(3, len(present))
    nrow = -(-len(present) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax in axes.flat[len(present):]:
        ax.remove()
    for ax, (metric, label, scale) in zip(axes.flat, present, strict=False):
        d = traces[traces["metric"] == metric]
        sns.lineplot(data=d, x=x, y="value", hue="algorithm", hue_order=order, palette=palette,
                     errorbar=("pi", 100), ax=ax, legend=metric == present[0][0])
        if metric == "kl":
            est = traces[traces["metric"] == "kl_estimate"]
            if len(est):
                sns.lineplot(data=est, x=x, y="value", hue="algorithm", palette=palette,
                             errorbar=None, ax=ax, legend=False, linestyle="--")
        if truth and metric in truth:
            ax.axhline(truth[metric], color="k", lw=1, ls="--")
        ax.set(ylabel=label, yscale=scale, xlabel="energy-gradient evaluations" if x == "grad_evals" else x)
        if x == "grad_evals":
            ax.set_xscale("log")
    fig.tight_layout()
    _save(fig, path)
    return path


def flow_panels(store: ResultStore, results: pd.DataFrame, path: Path, floor: float = 12.0) -> Path | None:
    """002 Fig. 1, one row per (target, algorithm) with a saved ODE-flow density (first seed): column 1 samples
    of p*, column 2 the generator's samples (the cell's ``negatives``), column 3 -E (the EBM's unnormalised
    log-density; the runner saves it normalised on the grid, which shifts it by log Z only), column 4 the
    flow's log-density (eq. 6). Log-densities are shown from their maximum down to ``floor`` nats below it."""
    runs = results[results["status"] == "ok"].drop_duplicates(["suite", "fidelity", "target", "algorithm"])
    rows = []
    for r in runs.sort_values(["target", "algorithm", "seed"]).itertuples():
        f = store.artifact_path(r._asdict())
        if not f.exists():
            continue
        with np.load(f) as z:
            if "flow_grid_log_density" in z:
                rows.append((r.target, r.algorithm, {k: z[k] for k in z.files}))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 4, figsize=(10.4, 2.6 * len(rows)), squeeze=False)
    titles = ["data", "generator samples", "-E (EBM)", "ODE-flow log-density"]
    for i, (t, a, art) in enumerate(rows):
        target = datasets.get_target(t)
        extent = [*target.box[0], *target.box[1]]
        data = target.test_set(2000).numpy()
        neg = art.get("negatives")
        panels = [("scatter", data), ("scatter", neg), ("image", art.get("grid_log_density")),
                  ("image", art["flow_grid_log_density"])]
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
                top = float(np.nanmax(v))
                ax.imshow(np.clip(v, top - floor, top), origin="lower", extent=extent, cmap="viridis",
                          aspect="auto")
            if i == 0:
                ax.set_title(titles[j])
        axes[i, 0].set_ylabel(f"{t}\n{a}", fontsize=8)
    fig.suptitle("002 Fig. 1: data, generator samples, -E and the ODE flow's log-density (first seed)")
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def make_all(store: ResultStore, x: str = "iteration") -> list[Path]:
    """All figures of a results folder; ``x = "grad_evals"`` draws the curves against work instead of
    iterations (files get a ``_vs_work`` suffix)."""
    results = store.results()
    figs = store.out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    traces = store.traces()
    truth = {}
    targets = results["target"].unique()
    if len(targets) == 1 and datasets.get_target(targets[0]).has_modes:
        truth["ebm_weight[0]"] = float(datasets.get_target(targets[0]).mode_weights[0])
    if x == "grad_evals":  # the same curves against work
        if "grad_evals" not in traces.columns:
            return []
        made = [weights_over_training(traces, figs / "weights_over_training_vs_work.png", x=x),
                training_curves(traces, figs / "training_curves_vs_work.png", truth, x=x)]
        return [p for p in made if p is not None] + plots_highdim.make(traces, figs, x)
    made = [density_panels(store, results, figs / "densities.png"),
            weights_over_training(traces, figs / "weights_over_training.png"),
            training_curves(traces, figs / "training_curves.png", truth),
            flow_panels(store, results, figs / "flow_panels.png")]
    return [p for p in made if p is not None] + plots_highdim.make(traces, figs)


__all__ = ["make_all"]
