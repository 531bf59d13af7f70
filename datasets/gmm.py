"""The two-mode Gaussian-mixture teacher of paper 003 (§4.1 eq. 14, App. B.1; 1-d version App. C eq. 43).

    rho_*(x) = (exp(-|x - a*|^2 / 2) + exp(-|x - b*|^2 / 2 - z*)) / Z_*,   Z_* = (2 pi)^(d/2) (1 + e^(-z*))

Unit-covariance modes; a* and b* differ from 0 only in their first coordinate. The mode at a* has weight
p* = 1 / (1 + e^(-z*)). 003's setting: d = 50, a*_1 = -10, b*_1 = +6, z* = -log 3, i.e. p* = 0.25 at -10
and 0.75 at +6. Dimension, separation and weight are knobs of the family. Mode 0 is the mode at a*.
"""

from __future__ import annotations

import math

import torch

from datasets.base import GaussianMixture


class TwoModeGMM(GaussianMixture):
    paper = "003 §4.1, App. B.1"

    def __init__(self, dim: int = 50, a1: float = -10.0, b1: float = 6.0, p_star: float = 0.25, name=None):
        a = torch.zeros(dim, dtype=torch.float64)
        b = torch.zeros(dim, dtype=torch.float64)
        a[0], b[0] = a1, b1
        super().__init__(means=torch.stack([a, b]), stds=1.0, weights=[p_star, 1 - p_star],
                         box=[(min(a1, b1) - 4.0, max(a1, b1) + 4.0)] + [(-4.0, 4.0)] * (dim - 1))
        self.a_star, self.b_star = a, b
        self.z_star = -math.log((1 - p_star) / p_star)  # p* = 1 / (1 + e^(-z*))
        self.p_star = p_star
        if name:
            self.name = name

    def region_masses(self, means, weights) -> torch.Tensor:
        """The mass that a mixture of unit-covariance Gaussians N(m_k, I) with weights w_k puts in each mode's
        region (``assign``: nearest of a*, b*), in closed form. The regions are the half-spaces on either side
        of the hyperplane n . x = c bisecting a* and b* (n = (b* - a*) / |b* - a*|, c = n . (a* + b*) / 2),
        so the mass of region 0 is sum_k w_k Phi(c - n . m_k): the limit of the share of exact samples."""
        a, b = self.a_star, self.b_star
        n = (b - a) / (b - a).norm()
        c = n.dot(a + b) / 2
        means, weights = torch.as_tensor(means).double().cpu(), torch.as_tensor(weights).double().cpu()
        left = torch.special.ndtr(c - means @ n)
        m0 = (weights * left).sum() / weights.sum()
        return torch.stack([m0, 1 - m0])

    def teacher_params(self) -> dict:
        return {"a": self.a_star, "b": self.b_star, "z": self.z_star}


class GMM50d(TwoModeGMM):
    """003 §4.1 / B.1: d = 50, first coordinates -10 and +6, weight 0.25 at -10."""

    name = "gmm50d"

    def __init__(self):
        super().__init__(dim=50, a1=-10.0, b1=6.0, p_star=0.25)


class GMM1d(TwoModeGMM):
    """003 App. C (eq. 43): the 1-d version, |a - b| = 10 (a = -5, b = 5), weight 0.25 at a."""

    name = "gmm1d"
    paper = "003 App. C"

    def __init__(self):
        super().__init__(dim=1, a1=-5.0, b1=5.0, p_star=0.25)
