"""Resampling of weighted walkers (003 App. A.4) and the effective sample size of weights (003 eq. 13).

Each scheme draws N points u_n in (0, 1] and picks walker m for u_n when P_(m-1) < u_n <= P_m, with P the
cumulative sum of the normalised weights (003 eq. 37-38). All three are unbiased: walker i is picked
N p_i times on average.
  multinomial: u_n ~ U(0, 1] independently;
  stratified:  u_n ~ U((n-1)/N, n/N] independently;
  systematic:  u_1 ~ U(0, 1/N], u_n = u_1 + (n-1)/N.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEMES = ("multinomial", "stratified", "systematic")


def resample_indices(p: Tensor, scheme: str = "systematic", generator: torch.Generator | None = None) -> Tensor:
    """Indices of the N walkers kept, given normalised weights p (shape (N,))."""
    n = p.shape[0]
    dev = p.device
    if scheme == "multinomial":
        u = 1 - torch.rand(n, generator=generator, dtype=torch.float64).to(dev)  # in (0, 1]
    elif scheme == "stratified":
        u = (torch.arange(n, dtype=torch.float64) + 1 - torch.rand(n, generator=generator, dtype=torch.float64)) / n
        u = u.to(dev)
    elif scheme == "systematic":
        u1 = 1 - torch.rand((), generator=generator, dtype=torch.float64)
        u = ((torch.arange(n, dtype=torch.float64) + u1) / n).to(dev)
    else:
        raise ValueError(f"unknown resampling scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    cdf = torch.cumsum(p.double(), 0)
    cdf = cdf / cdf[-1]
    return torch.searchsorted(cdf, u).clamp_max(n - 1)


def normalised_weights(log_w: Tensor) -> Tensor:
    """p_i = exp(A_i) / sum_j exp(A_j), computed stably."""
    return torch.softmax(log_w.double(), 0)


def ess_fraction(log_w: Tensor) -> float:
    """003 eq. (13): ESS = (mean e^A)^2 / mean e^(2A), in (0, 1]; the effective sample size is N * ESS."""
    a = log_w.double()
    return float(torch.exp(2 * torch.logsumexp(a, 0) - torch.logsumexp(2 * a, 0) - math.log(a.shape[0])))


def log_mean_exp(log_w: Tensor) -> float:
    a = log_w.double()
    return float(torch.logsumexp(a, 0) - math.log(a.shape[0]))
