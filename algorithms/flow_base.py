"""The base of the suite's normalizing flows, shared by the vector RealNVP (algorithms/flows.py) and the image flow
(algorithms/image_flows.py): rho = N(0, sigma^2 I) and the flow's density and sampling from its two maps."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from algorithms.work import Work


class GaussianBase:
    """The base rho = N(0, sigma^2 I) of a flow with a ``dim`` and a ``base_scale`` buffer (sigma), and the
    flow's density and sampling from its ``forward`` (z -> x) and ``inverse`` (x -> z), each returning the map
    and its log |det|; shared by the vector RealNVP and the image flow (algorithms/image_flows.py)."""

    dim: int
    base_scale: Tensor

    def base_log_prob(self, z: Tensor) -> Tensor:
        s = self.base_scale.to(z)  # a scalar, or (S, 1, 1) for a stacked flow (one sigma per seed)
        return -0.5 * (z / s).pow(2).sum(-1) - self.dim * (torch.log(s) + 0.5 * math.log(2 * math.pi)).reshape(
            s.shape[:-1])

    def base_sample(self, n: int, generators=None) -> Tensor:
        """n draws of rho; with ``generators`` (a stacked flow, algorithms/stacking.py) (S, n, dim), slice s drawn
        from ``generators[s]`` (the same numbers as ``base_sample(n)`` on a global stream in that state)."""
        p = self.base_scale
        if generators is None:
            return p * torch.randn(n, self.dim, device=p.device, dtype=p.dtype)
        z = torch.empty(len(generators), n, self.dim, device=p.device, dtype=p.dtype)
        for s, g in enumerate(generators):
            z[s].normal_(generator=g)
        return p * z

    def log_prob(self, x: Tensor, work: Work | None = None) -> Tensor:
        """log lambda(x) = log rho(T^-1 x) + log |det J_{T^-1}(x)| (000 eq. 5)."""
        z, ladj = self.inverse(x, work)
        return self.base_log_prob(z) + ladj

    def sample(self, n: int, work: Work | None = None, generators=None) -> tuple[Tensor, Tensor]:
        """n samples x = T(z), z ~ rho, with their log lambda(x) (one pass each); ``generators``: as
        ``base_sample``."""
        z = self.base_sample(n, generators)
        x, ladj = self.forward(z, work)
        return x, self.base_log_prob(z) - ladj


__all__ = ["GaussianBase"]
