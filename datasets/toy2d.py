"""Two-dimensional targets of papers 000 (App. C.2-C.4), 002 (§5.1) and 004 (§5.1).

Where the papers are ambiguous, the choices are this suite's (docs/choices.md); each class says what it uses.
"""

from __future__ import annotations

import math

import torch

from datasets.base import GaussianMixture, Target


class TwoMode(GaussianMixture):
    """000 App. C.2: 1/3 N(-1.5*1, 0.05 I) + 2/3 N(+1.5*1, 0.1 I).

    0.05 and 0.1 are covariances (variances): standard deviations sqrt(0.05) and sqrt(0.1).
    Mode 1 is the heavier, top-right mode whose weight 000 Fig. 1 (right) follows over training.
    """

    name = "two_mode"
    paper = "000 App. C.2"

    def __init__(self):
        super().__init__(
            means=[[-1.5, -1.5], [1.5, 1.5]],
            stds=[math.sqrt(0.05), math.sqrt(0.1)],
            weights=[1 / 3, 2 / 3],
            box=[(-3.0, 3.0), (-3.0, 3.0)],
        )


class FourMode(GaussianMixture):
    """000 App. C.3: sum_i w_i N(mu_i, 0.05 I), w = (0.1, 0.2, 0.3, 0.4), mu_i evenly spaced on the
    horizontal axis from x = -3 to 3. 0.05 is a covariance. Regions: nearest mean (000 Fig. 4)."""

    name = "four_mode"
    paper = "000 App. C.3"

    def __init__(self):
        super().__init__(
            means=[[-3.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]],
            stds=math.sqrt(0.05),
            weights=[0.1, 0.2, 0.3, 0.4],
            box=[(-4.5, 4.5), (-2.0, 2.0)],
        )


class EightGaussians(GaussianMixture):
    """000 App. C.4: 8 equal-weight N(mu_i, 0.15^2 I), mu_i = (cos 2 pi i/8, sin 2 pi i/8).

    Not FFJORD's "8gaussians" (other scale)."""

    name = "eight_gaussians"
    paper = "000 App. C.4"

    def __init__(self):
        t = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
        super().__init__(
            means=torch.stack([t.cos(), t.sin()], -1),
            stds=0.15,
            weights=[1 / 8] * 8,
            box=[(-2.0, 2.0), (-2.0, 2.0)],
        )


class GaussianGrid(GaussianMixture):
    """002 §5.1 "3x3 Gaussian grid": 9 equal-weight Gaussians.

    002 gives no numbers. We use means on {-2, 0, 2}^2 and standard deviation 0.15 (state this when
    comparing with 002's test log-likelihoods, which depend on the scale)."""

    name = "gaussian_grid"
    paper = "002 §5.1 (scale chosen by this suite)"

    def __init__(self):
        g = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
        means = torch.cartesian_prod(g, g)
        super().__init__(means=means, stds=0.15, weights=[1 / 9] * 9, box=[(-3.0, 3.0), (-3.0, 3.0)])


class Rings(Target):
    """000 App. C.4: inverse polar reparametrisation of radius r ~ sum_i 1/4 N(i+1, 0.15^2), i = 0..3,
    and angle uniform on [0, 2 pi).

    Exact Cartesian density: p(x) = [p_r(|x|) + p_r(-|x|)] / (2 pi |x|) (a negative radius draw lands at
    angle + pi). Regions: radial shells cut at 1.5, 2.5, 3.5. Not FFJORD's "rings".
    """

    name = "rings"
    paper = "000 App. C.4"
    has_density = True
    box = ((-5.0, 5.0), (-5.0, 5.0))
    radii = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    std = 0.15

    @property
    def n_modes(self):
        return 4

    @property
    def mode_weights(self):
        return torch.full((4,), 0.25, dtype=torch.float64)

    def sample(self, n, generator=None):
        comp = torch.randint(0, 4, (n,), generator=generator)
        r = self.radii[comp] + self.std * torch.randn(n, generator=generator, dtype=torch.float64)
        theta = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.stack([r * theta.cos(), r * theta.sin()], -1).float()

    def _log_pr(self, r):
        mu = self.radii.to(r)
        lp = -0.5 * ((r[..., None] - mu) / self.std) ** 2 - math.log(self.std * math.sqrt(2 * math.pi))
        return torch.logsumexp(lp + math.log(0.25), -1)

    def log_prob(self, x):
        r = x.norm(dim=-1).clamp_min(1e-12)
        lp = torch.logaddexp(self._log_pr(r), self._log_pr(-r))
        return lp - math.log(2 * math.pi) - r.log()

    def assign(self, x):
        cuts = torch.tensor([1.5, 2.5, 3.5], dtype=x.dtype, device=x.device)
        return torch.bucketize(x.norm(dim=-1).contiguous(), cuts)


class SwissRoll(Target):
    """002 §5.1 Swiss roll. Sample-only: no exact density (the noisy roll has none in closed form).

    002 gives no numbers. We use t ~ U(1.5 pi, 4.5 pi), x = (t cos t, t sin t) / 5 + 0.1 N(0, I)."""

    name = "swiss_roll"
    paper = "002 §5.1 (parameters chosen by this suite)"
    box = ((-3.0, 3.0), (-3.0, 3.0))

    def sample(self, n, generator=None):
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        x = torch.stack([t * t.cos(), t * t.sin()], -1) / 5
        return (x + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


class Spiral(Target):
    """004 §5.1 spiral (CoopFlow's 2-D example). Sample-only: no exact density.

    004 gives no numbers. We use one arm, t ~ U(0, 1), radius 3 t, angle 4 pi t, plus 0.05 N(0, I)."""

    name = "spiral"
    paper = "004 §5.1 (parameters chosen by this suite)"
    box = ((-3.5, 3.5), (-3.5, 3.5))

    def sample(self, n, generator=None):
        t = torch.rand(n, generator=generator, dtype=torch.float64)
        r, a = 3 * t, 4 * math.pi * t
        x = torch.stack([r * a.cos(), r * a.sin()], -1)
        return (x + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()
