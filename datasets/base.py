"""The target contract: a distribution that samples itself and states the ground truth it really has.

A target always has ``sample(n, generator)`` and a fixed held-out ``test_set``. Where the truth is known it
also has an exact normalised ``log_prob``, a partition of space into one region per mode (``assign``) and the
true ``mode_weights``. Targets without an exact density say so (``has_density = False``) and raise
``NoGroundTruth`` instead of inventing one. ``version`` changes whenever the distribution changes, so a
result always says exactly what it was measured on.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class NoGroundTruth(NotImplementedError):
    """Raised when a quantity is asked of a target that does not know it exactly."""


class Target(ABC):
    name: str = ""
    version: str = "1"
    paper: str = ""
    dim: int = 2
    has_density: bool = False
    #: plotting / integration box: one (low, high) pair per dimension
    box: tuple[tuple[float, float], ...] = ((-1.0, 1.0), (-1.0, 1.0))

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact i.i.d. samples, shape (n, dim), float32 on the CPU."""

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact normalised log-density at x (shape (..., dim) -> (...))."""
        raise NoGroundTruth(f"target {self.name!r} has no exact density")

    @property
    def n_modes(self) -> int:
        raise NoGroundTruth(f"target {self.name!r} has no mode partition")

    @property
    def mode_weights(self) -> Tensor:
        """True weight of each mode (float64, sums to 1)."""
        raise NoGroundTruth(f"target {self.name!r} has no mode weights")

    def assign(self, x: Tensor) -> Tensor:
        """Index of the region (mode) each point falls in: a partition of the whole space."""
        raise NoGroundTruth(f"target {self.name!r} has no mode partition")

    @property
    def has_modes(self) -> bool:
        try:
            _ = self.n_modes
        except NoGroundTruth:
            return False
        return True

    def test_set(self, n: int = 10_000) -> Tensor:
        """A fixed held-out set: the same points for every run, algorithm and seed."""
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.name}/{self.version}/test".encode()))
        return self.sample(n, g)

    def describe(self) -> dict:
        return {"target": self.name, "target_version": self.version, "dim": self.dim}


class GaussianMixture(Target):
    """Mixture of isotropic Gaussians sum_k w_k N(mu_k, s_k^2 I) with exact density and modes.

    ``stds`` are standard deviations (not variances). Modes are the Voronoi cells of the means
    (nearest mean in Euclidean distance).
    """

    has_density = True

    def __init__(self, means, stds, weights, box=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        k, d = self.means.shape
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        w = torch.as_tensor(weights, dtype=torch.float64).expand(k).clone()
        if (w <= 0).any() or (self.stds <= 0).any():
            raise ValueError("mixture weights and standard deviations must be positive")
        self._weights = w / w.sum()
        self.dim = d
        if box is not None:
            self.box = tuple(tuple(map(float, b)) for b in box)

    @property
    def n_modes(self) -> int:
        return self.means.shape[0]

    @property
    def mode_weights(self) -> Tensor:
        return self._weights.clone()

    def sample(self, n, generator=None):
        comp = torch.multinomial(self._weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[comp] + self.stds[comp, None] * z).float()

    def component_log_prob(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; mu_k, s_k^2 I), shape (..., K)."""
        mu = self.means.to(x)
        s = self.stds.to(x)
        sq = ((x[..., None, :] - mu) ** 2).sum(-1)
        return (
            self._weights.to(x).log()
            - 0.5 * sq / s**2
            - self.dim * (s.log() + 0.5 * math.log(2 * math.pi))
        )

    def log_prob(self, x):
        return torch.logsumexp(self.component_log_prob(x), dim=-1)

    def assign(self, x):
        return torch.cdist(x.to(self.means), self.means).argmin(-1)
