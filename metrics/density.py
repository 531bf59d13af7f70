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

    Both inputs must be normalised log-densities at the same points. 000 does not state its points; the suite
    evaluates it at two sets, both densities normalised on the evaluation grid: the target's fixed held-out
    samples x ~ p* (``logp_median_sq_error``: where the data are) and the nodes of the uniform evaluation grid
    of the box (``logp_median_sq_error_grid``: mostly tails, the reading whose magnitude matches 000's)."""
    a = torch.as_tensor(log_p_model).double().reshape(-1)
    b = torch.as_tensor(log_p_true).double().reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"{a.shape} vs {b.shape} points")
    # numpy's median: the mean of the two middle values for an even count (torch.median takes the lower one)
    return float(np.median(((a - b) ** 2).cpu().numpy()))


# ---------------------------------------------------------------- models that are not densities on the box
# A model normalised on the evaluation box drops whatever mass it puts outside it; an untilted EBM can even be
# improper (exp(-U) not integrable). These measure what the box normalisation hides.


def enlarged_box(box, factor: float) -> tuple[tuple[float, float], ...]:
    """The box with the same centre, ``factor`` times as wide along every axis."""
    out = []
    for lo, hi in box:
        c, half = (lo + hi) / 2, factor * (hi - lo) / 2
        out.append((c - half, c + half))
    return tuple(out)


def inside_box(x: Tensor, box) -> Tensor:
    """Boolean mask of the points of x (n, d) that lie inside box (closed)."""
    x = torch.as_tensor(x)
    lo = torch.tensor([b[0] for b in box], dtype=x.dtype)
    hi = torch.tensor([b[1] for b in box], dtype=x.dtype)
    return ((x >= lo) & (x <= hi)).all(-1)


def mass_outside(log_unnormalized: Tensor, inside: Tensor) -> float:
    """Fraction of a density's mass on a uniform grid that lies at the nodes not marked ``inside``.

    Riemann sum with equal cells: the area cancels. NaN if any value is NaN; if some values are +inf the
    mass is shared equally by those nodes (the limit of an ever larger density there)."""
    lu = torch.as_tensor(log_unnormalized).reshape(-1).double().cpu()
    inside = torch.as_tensor(inside).reshape(-1).bool().cpu()
    if lu.shape != inside.shape:
        raise ValueError(f"{lu.numel()} values vs {inside.numel()} inside flags")
    if torch.isnan(lu).any():
        return float("nan")
    top = torch.isposinf(lu)
    p = top.double() / top.sum() if top.any() else torch.softmax(lu, 0)
    return float(p[~inside].sum())


def border_density_ratio(log_unnormalized_image: Tensor) -> float:
    """max of the density on the outermost ring of cells of an (n, n) grid over the box / its max over the whole
    grid, in [0, 1]: 1 when the density peaks on the box's border (mass is likely to lie beyond it), about 0
    for a density that has decayed at the border. NaN if any value is NaN."""
    lu = torch.as_tensor(log_unnormalized_image).double()
    if lu.dim() != 2 or min(lu.shape) < 2:
        raise ValueError(f"expected an (n, n) image with n >= 2, got shape {tuple(lu.shape)}")
    if torch.isnan(lu).any():
        return float("nan")
    ring = torch.cat([lu[0], lu[-1], lu[1:-1, 0], lu[1:-1, -1]])
    top, ring_top = lu.max(), ring.max()
    if torch.isposinf(top):
        return 1.0 if torch.isposinf(ring_top) else 0.0
    return float(torch.exp(ring_top - top))


def energy_spread(u: Tensor) -> float:
    """max U - min U over a set of points (nats): how many nats the model's log-density varies across them.
    Free of U's additive constant, which the maximum-likelihood gradient never fixes. On held-out data of a
    target, a model that fits it needs a spread near the target's own (tens of nats on the 2-D targets); a
    runaway energy shows spreads of 1e5 and more. Non-finite values give inf (NaN stays NaN)."""
    u = u.detach().double()
    if not torch.isfinite(u).all():
        return float("nan") if torch.isnan(u).any() else math.inf
    return float(u.max() - u.min())
