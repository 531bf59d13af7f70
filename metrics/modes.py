"""Mode-weight metrics (000 App. C.3, Table 3; 000 Fig. 1 right; the sample share of 003's student).

A target partitions space into one region per mode (``Target.assign``). The weight of a mode is the
fraction of samples in its region, or, for a density known up to its normalisation on a grid, the mass of
its region. ``chain_mode_stay`` reads the same regions along chains: do they move between modes?
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def sample_mode_weights(labels: Tensor, n_modes: int, weights: Tensor | None = None) -> np.ndarray:
    """Histogram of region labels, normalised: the weights that samples give each mode. With importance
    ``weights`` (e.g. Jarzynski walkers), each sample counts with its normalised weight."""
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if labels.numel() == 0:
        raise ValueError("no samples")
    if weights is None:
        return torch.bincount(labels, minlength=n_modes).double().numpy() / labels.numel()
    w = torch.as_tensor(weights).reshape(-1).double().cpu()
    if w.shape != labels.shape:
        raise ValueError(f"{w.numel()} weights for {labels.numel()} samples")
    return (torch.bincount(labels, weights=w, minlength=n_modes) / w.sum()).numpy()


def grid_mode_weights(log_density: Tensor, labels: Tensor, n_modes: int) -> np.ndarray:
    """Mass of each region under a density given (up to a constant) at the nodes of a uniform grid.

    Riemann sum: cell areas are equal, so they cancel in the normalisation."""
    log_density = torch.as_tensor(log_density).reshape(-1).double().cpu()
    p = torch.softmax(log_density, 0)
    out = torch.zeros(n_modes, dtype=torch.float64).index_add_(0, torch.as_tensor(labels).reshape(-1).cpu(), p)
    return out.numpy()


def weight_mse(weights, true_weights) -> float:
    """Mean over modes of the squared weight error: 000 Table 3's 'MSE of X wrt p'."""
    w, t = np.asarray(weights, float), np.asarray(true_weights, float)
    if w.shape != t.shape:
        raise ValueError(f"weights of shape {w.shape} vs true weights of shape {t.shape}")
    return float(np.mean((w - t) ** 2))


def weight_relative_error(weights, true_weights) -> np.ndarray:
    """Per-mode relative error (w - w*) / w*."""
    w, t = np.asarray(weights, float), np.asarray(true_weights, float)
    return (w - t) / t


def chain_mode_stay(labels) -> float:
    """Mean over chains of the largest share of a chain's draws that lie in one mode's region, from region labels
    shaped (chain, draw): 1 when every chain stays in one mode; near the largest mode weight when each chain visits
    the modes in proportion to their weights. Not in the papers: it separates the two readings of a large R-hat
    (000 Table 2), chains trapped in their modes (stay 1, and an R-hat that then depends on how far the chains move
    within a mode over the draws) from chains that hop but slowly (stay below 1). Exact draws from within one mode
    give 1 minus the target's misassignment rate (a draw nearer another mode's centre)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] < 1 or labels.shape[1] < 1:
        raise ValueError(f"labels must be (chain, draw), got shape {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError("region labels must be non-negative")
    n_modes = int(labels.max()) + 1
    counts = np.zeros((labels.shape[0], n_modes))
    np.add.at(counts, (np.arange(labels.shape[0])[:, None], labels), 1.0)
    return float((counts.max(axis=1) / labels.shape[1]).mean())
