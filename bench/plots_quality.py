"""Figures of sample quality (metrics/sample_quality.py), written as PNG:

- ``energy_histogram``: energies of samples against data on shared bins (Grenioux et al. 2023, Fig. 7), with the
  overlap, W1, mean gap and std ratio in the legend; ``energy_histogram_grid``: one such panel per target and
  algorithm (the image runs' ``energy_histograms.png``).
- ``fid_over_training``: an FID (or KID / IS) trace over training (Xie et al. 2022, App. A.7, Fig. 12), one panel
  per target, one line per algorithm with the mean and min-max band over seeds. The metric's name says its
  extractor (``fid_inception`` or ``fid_classifier``): the y-axis label repeats it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.figures import curve_frame, draw_band, legend_below, palette, save  # noqa: E402
from bench.tables import describe  # noqa: E402


def _energy_panel(ax, hist, title: str, labels=("samples", "data")) -> None:
    centres, width = (hist.edges[:-1] + hist.edges[1:]) / 2, np.diff(hist.edges)
    ax.bar(centres, hist.density_data, width=width, alpha=0.5, color="#4c72b0", label=labels[1])
    ax.bar(centres, hist.density_samples, width=width, alpha=0.5, color="#dd8452", label=labels[0])
    m = hist.metrics
    ax.set(xlabel="energy", ylabel="density")
    ax.legend(title=f"overlap {m['energy_overlap']:.3f}, W1 {m['energy_w1']:.3g}\n"
                    f"mean gap {m['energy_mean_gap']:.3g} sd, sd ratio {m['energy_std_ratio']:.3g}",
              fontsize=7, title_fontsize=7)
    ax.set_title(title, fontsize=9)


def energy_histogram(hist, path: Path, title: str = "", labels=("samples", "data")) -> Path:
    """Draw an :class:`~metrics.sample_quality.EnergyHistograms` (densities on shared bins)."""
    fig, ax = plt.subplots(figsize=(5.0, 3.4), layout="constrained")
    _energy_panel(ax, hist, title or "Energies of samples and data", labels)
    save(fig, path)
    return path


def energy_histogram_grid(panels: list[tuple[str, str, object]], path: Path, title: str = "") -> Path | None:
    """One panel per (target, algorithm, EnergyHistograms): a row per target, a column per algorithm."""
    if not panels:
        return None
    targets = sorted({t for t, _, _ in panels})
    algos = sorted({a for _, a, _ in panels})
    fig, axes = plt.subplots(len(targets), len(algos), figsize=(4.2 * len(algos), 3.2 * len(targets)),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for t, a, hist in panels:
        ax = axes[targets.index(t), algos.index(a)]
        ax.axis("on")
        _energy_panel(ax, hist, f"{t}: {a}", ("generated", "held-out data"))
    fig.suptitle(title or "Energies of generated and held-out images (000 Fig. 7)", fontsize=10)
    save(fig, path)
    return path


def fid_over_training(traces: pd.DataFrame, path: Path, metric: str = "fid_inception", x: str = "iteration",
                      title: str = "") -> Path | None:
    """``traces``: long format (target, algorithm, seed, iteration / grad_evals, metric, value). None when the
    metric is absent."""
    t = traces[traces["metric"] == metric]
    if t.empty:
        return None
    targets = sorted(t["target"].unique())
    colours = palette(t["algorithm"])
    fig, axes = plt.subplots(1, len(targets), figsize=(4.0 * len(targets) + 0.6, 3.4), squeeze=False,
                             layout="constrained")
    for ax, target in zip(axes[0], targets, strict=True):
        draw_band(ax, curve_frame(t[t["target"] == target], x), x, colours)
        ax.set(xlabel="energy-gradient evaluations" if x == "grad_evals" else x, ylabel=metric)
        ax.set_title(target, loc="left", fontsize=10, weight="bold")
    legend_below(fig, colours)
    if not title and {"suite", "fidelity"} <= set(t.columns):
        title = f"{metric} over training: {describe(t)}; mean and min-max band over seeds"
    fig.suptitle(title or f"{metric} over training; mean and min-max band over seeds", fontsize=10)
    save(fig, path)
    return path
