"""Figures of the image suites (003 §4.2, App. B.2), PNG:

- sample_grids.png: 003 Fig. 2 / 12: a grid of generated images per algorithm (first finished seed; the cell's
  saved ``negatives``: Jarzynski's are drawn from its walkers by their weights, as after a resampling), and a
  grid of held-out images of the target's mix beside them: targets with the "image" capability;
- image_training.png: 003 Fig. 4 (and Fig. 11-12's training runs): Jarzynski's cross-entropy estimate (003 eq.
  12) and the walkers' effective sample size (eq. 13) over training, and the mean per-class relative weight
  error of every algorithm's generated images over training (003 Fig. 3's quantity along training); mean and
  min-max band over seeds, from traces.csv (the same traces machinery as the GMM suites): targets whose traces
  hold ``label_weight_relerr_mean``;
- fid_over_training.png: the classifier FID of the generated images at every trace point (bench/plots_quality.py):
  targets whose traces hold ``fid_classifier``;
- energy_histograms.png: 000 Fig. 7, energies of generated against held-out images (first finished seed's cell
  artifact), per target and algorithm: runs that saved them.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import datasets  # noqa: E402
from bench.figures import save  # noqa: E402
from bench.tables_highdim import holding  # noqa: E402

#: images per grid (a square)
GRID = 64


def image_grid(x: np.ndarray, shape, n: int = GRID) -> np.ndarray:
    """Flattened images (suite convention, pixels in [-1, 1]) as one tiled H x W (or H x W x 3) array in [0, 1],
    sqrt(n) per side, one-pixel gaps; pure, so the tiling is tested."""
    c, h, w = shape
    x = np.clip((np.asarray(x, dtype=float)[:n].reshape(-1, c, h, w) + 1) / 2, 0, 1)
    side = math.ceil(math.sqrt(len(x)))
    out = np.ones((c, side * (h + 1) - 1, side * (w + 1) - 1))
    for i, img in enumerate(x):
        r, q = divmod(i, side)
        out[:, r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = img
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def _image_targets(results: pd.DataFrame) -> list[str]:
    """Targets with the "image" capability (their saved negatives are drawn as images)."""
    return sorted(t for t in results["target"].unique() if datasets.get_target(t).has("image"))


def sample_grids(store, results: pd.DataFrame, path: Path) -> Path | None:
    targets = _image_targets(results)
    runs = results[(results["status"] == "ok") & results["target"].isin(targets)].sort_values("seed")
    runs = runs.drop_duplicates(["suite", "fidelity", "target", "algorithm"])
    if runs.empty:
        return None
    algos = sorted(runs["algorithm"].unique())
    fig, axes = plt.subplots(len(targets), len(algos) + 1, figsize=(2.6 * (len(algos) + 1), 2.9 * len(targets)),
                             squeeze=False)
    for i, t in enumerate(targets):
        tgt = datasets.get_target(t)
        held = tgt.test_set(GRID).numpy()
        axes[i, 0].imshow(image_grid(held, tgt.shape), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"{t}\nheld-out images", fontsize=8)
        for j, a in enumerate(algos, start=1):
            ax = axes[i, j]
            r = runs[(runs["target"] == t) & (runs["algorithm"] == a)]
            z = store.artifact(r.iloc[0].to_dict()) if len(r) else None
            if z is not None and "negatives" in z:
                ax.imshow(image_grid(z["negatives"], tgt.shape), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{a} (seed {int(r.iloc[0]['seed'])})", fontsize=8)
            else:
                ax.set_title(f"{a}: no samples", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle("003 Fig. 2 / 12: generated images (first finished seed) and held-out images", fontsize=10)
    save(fig, path)
    return path


def _band(ax, tr: pd.DataFrame, metric: str, x: str, label_by: str = "algorithm") -> bool:
    d = tr[tr["metric"] == metric]
    if d.empty:
        return False
    for name, g in d.groupby(label_by):
        s = g.groupby(x)["value"].agg(["mean", "min", "max"])
        ax.plot(s.index, s["mean"], label=str(name))
        ax.fill_between(s.index, s["min"], s["max"], alpha=0.2)
    return True


def image_training(traces: pd.DataFrame, path: Path, x: str = "iteration") -> Path | None:
    if traces.empty:
        return None
    targets = sorted(holding(traces, "label_weight_relerr_mean"))
    tr = traces[traces["target"].isin(targets)]
    if tr.empty:
        return None
    panels = [("cross_entropy_estimate", "cross-entropy estimate (003 eq. 12, Fig. 4 left)"),
              ("ess", "walkers' ESS fraction (003 eq. 13, Fig. 4 right)"),
              ("label_weight_relerr_mean", "mean per-class relative weight error")]
    fig, axes = plt.subplots(len(targets), 3, figsize=(14, 3.4 * len(targets)), squeeze=False)
    for i, t in enumerate(sorted(targets)):
        for j, (metric, title) in enumerate(panels):
            ax = axes[i, j]
            if _band(ax, tr[tr["target"] == t], metric, x):
                ax.legend(fontsize=7)
            ax.set_title(f"{t}: {title}", fontsize=8)
            ax.set_xlabel(x)
    fig.suptitle("Image targets over training: mean and min-max band over seeds", fontsize=10)
    save(fig, path)
    return path


def energy_histograms(store, results: pd.DataFrame, path: Path) -> Path | None:
    """000 Fig. 7 per image target and algorithm, from the first finished seed's saved energies."""
    from bench.plots_quality import energy_histogram_grid
    from metrics.sample_quality import energy_histograms as histograms

    runs = results[(results["status"] == "ok") & results["target"].isin(_image_targets(results))]
    runs = runs.sort_values("seed").drop_duplicates(["suite", "fidelity", "target", "algorithm"])
    panels = []
    for r in runs.itertuples():
        z = store.artifact(runs.loc[r.Index].to_dict())
        if z is not None and "energy_negatives" in z and "energy_data" in z:
            panels.append((r.target, f"{r.algorithm} (seed {r.seed})", histograms(z["energy_negatives"],
                                                                                  z["energy_data"])))
    return energy_histogram_grid(panels, path)


def make(store, results: pd.DataFrame, traces: pd.DataFrame, figs: Path, x: str = "iteration") -> list[Path]:
    from bench.plots_quality import fid_over_training

    suffix = "_vs_work" if x == "grad_evals" else ""
    made = [image_training(traces, figs / f"image_training{suffix}.png", x),
            fid_over_training(traces, figs / f"fid_over_training{suffix}.png", "fid_classifier", x)]
    if not suffix:
        made += [sample_grids(store, results, figs / "sample_grids.png"),
                 energy_histograms(store, results, figs / "energy_histograms.png")]
    return [p for p in made if p is not None]
