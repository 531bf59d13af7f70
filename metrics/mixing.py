"""Mixing diagnostics of independent chains (000 Table 2, 001 Fig. 2), via arviz-stats.

Chains are arrays shaped (chain, draw, dim). ``max_rhat`` is the maximum over dimensions of arviz's
rank-normalised split R-hat (Vehtari et al. 2021); ``classic_rhat`` is the Gelman-Rubin statistic
(001's variant, threshold 1.2) for reproducing tables that used it. ESS: arviz bulk and tail
(5 % / 95 % quantiles) ESS, minimum over dimensions.
"""

from __future__ import annotations

import numpy as np


def _arviz():
    """arviz-stats, imported on first use: its import (xarray, scipy) takes about 2 s, and importing the suite
    (``import bench``: the metric declarations name these functions) should not pay it."""
    import arviz_stats

    return arviz_stats


def _as_chains(chains) -> np.ndarray:
    x = np.asarray(chains, dtype=float)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 4:
        raise ValueError(f"chains must be (chain >= 2, draw >= 4, dim), got shape {x.shape}")
    return x


def rhat(chains) -> np.ndarray:
    """Rank-normalised split R-hat per dimension."""
    return np.atleast_1d(_arviz().rhat(_as_chains(chains), chain_axis=0, draw_axis=1))


def max_rhat(chains) -> float:
    return float(np.max(rhat(chains)))


def ess_bulk(chains) -> np.ndarray:
    return np.atleast_1d(_arviz().ess(_as_chains(chains), method="bulk", chain_axis=0, draw_axis=1))


def ess_tail(chains) -> np.ndarray:
    return np.atleast_1d(
        _arviz().ess(_as_chains(chains), method="tail", prob=(0.05, 0.95), chain_axis=0, draw_axis=1)
    )


def classic_rhat(chains) -> np.ndarray:
    """Gelman-Rubin potential scale reduction sqrt(((n-1)/n W + B/n) / W) per dimension (no split,
    no rank normalisation). Chains that never move (W = 0) give inf where they sit apart (B > 0: no mixing at
    all) and nan where they all sit at one value (R-hat undefined), without a numpy warning."""
    x = _as_chains(chains)
    n = x.shape[1]
    w = x.var(axis=1, ddof=1).mean(axis=0)
    b = n * x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(((n - 1) / n * w + b / n) / w)
