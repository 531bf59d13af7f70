"""Density metrics on 2-D grids (000 Table 1, 000 Fig. 2)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def grid(box, n: int, dtype=torch.float32) -> tuple[Tensor, float]:
    """Nodes of a uniform n x n grid over box = ((x0, x1), (y0, y1)) at cell centres, shape (n*n, 2),
    and the cell area."""
    (x0, x1), (y0, y1) = box
    dx, dy = (x1 - x0) / n, (y1 - y0) / n
    xs = x0 + dx * (torch.arange(n, dtype=torch.float64) + 0.5)
    ys = y0 + dy * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1).to(dtype), dx * dy


def grid_log_normalizer(log_unnormalized: Tensor, cell_area: float) -> float:
    """log Z = log sum_cells exp(log u) * area: the normaliser of a density over the grid's box."""
    return float(torch.logsumexp(torch.as_tensor(log_unnormalized).double().reshape(-1), 0)) + math.log(cell_area)


def median_sq_log_density_error(log_p_model: Tensor, log_p_true: Tensor) -> float:
    """median_x (log p_model(x) - log p*(x))^2 over the given points (000 Table 1).

    Both inputs must be normalised log-densities at the same points. The suite evaluates it at the
    target's fixed held-out samples x ~ p*, with both densities normalised on the evaluation grid
    (000 does not state the points; evaluating over a whole box would be dominated by empty space)."""
    a = torch.as_tensor(log_p_model).double().reshape(-1)
    b = torch.as_tensor(log_p_true).double().reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"{a.shape} vs {b.shape} points")
    # numpy's median: the mean of the two middle values for an even count (torch.median takes the lower one)
    return float(np.median(((a - b) ** 2).cpu().numpy()))
