"""The target contract: a distribution that samples itself and states the ground truth it really has.

A target always has ``sample(n, generator)`` and a fixed held-out ``test_set``. Where the truth is known it
also has an exact normalised ``log_prob``, a partition of space into one region per mode (``assign``) and the
true ``mode_weights``. Targets without an exact density say so (``has_density = False``) and raise
``NoGroundTruth`` instead of inventing one. ``version`` changes whenever the distribution changes, so a
result always says exactly what it was measured on.

Capabilities. What a target offers beyond sampling is declared here, on the base class, once: each capability
has its attribute or method below, with a default that says "not this target" (``has_density = False``, ``shape
= None``, methods that raise ``NoGroundTruth``). A target has a capability when it sets the attribute or
overrides the method; ``target.has(name)`` and ``target.capabilities()`` say which it has, and ``CAPABILITIES``
says what each one enables, so the harness asks ``has`` instead of probing for attributes.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class NoGroundTruth(NotImplementedError):
    """Raised when a quantity is asked of a target that does not know it exactly."""


#: capability -> (how a target declares it, what it enables)
CAPABILITIES: dict[str, tuple[str, str]] = {
    "density": ("has_density = True and log_prob(x), exact and normalised",
                "KL(p* || p_theta), the log-density error, the truth of the test log-likelihood and of the density "
                "figures, Jarzynski's KL estimate, NT-EBM's reverse-KL pre-training"),
    "modes": ("n_modes, mode_weights and assign(x), a partition of space into one region per mode",
              "mode weights of the EBM, of the negatives and of the chain starts (000 Table 3, Fig. 1), the "
              "weight figures"),
    "mixture": ("means and stds of isotropic Gaussian components (GaussianMixture)",
                "the independent audit of the EBM's mode weights (flowMC with a proposal at the means)"),
    "image": ("shape = (C, H, W) of the flattened images it samples",
              "convolutional energies and image flows, sample grids"),
    "classifier": ("classifier() and off_class(x): the suite's classifier of its images",
                   "class weights of generated images (003 Fig. 3), classifier FID / IS features"),
    "sample_quality": ("sample_quality = True", "FID / IS of the generated images after training"),
    "teacher": ("teacher_params(): the true parameters of a teacher-student target",
                "the student's parameter errors param_error[name] (003 Fig. 1)"),
    "region_masses": ("region_masses(means, weights): the mass a unit-covariance mixture puts in each region",
                      "the model's sample share per mode in closed form instead of by sampling"),
    "data_files": ("check_data(): reads and checks the files the target is made of",
                   "a missing or corrupt file is one error line before any cell runs"),
}


class Target(ABC):
    name: str = ""
    version: str = "1"
    paper: str = ""
    dim: int = 2
    #: capability "density" (CAPABILITIES)
    has_density: bool = False
    #: plotting / integration box: one (low, high) pair per dimension
    box: tuple[tuple[float, float], ...] = ((-1.0, 1.0), (-1.0, 1.0))
    #: capability "image": (C, H, W) of the flattened images, else None
    shape: tuple[int, int, int] | None = None
    #: capability "sample_quality"
    sample_quality: bool = False
    #: the parameters a family member was made with (``with_params``), part of what it is
    params: dict = {}

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

    # ---- optional capabilities (CAPABILITIES): a target has one when it overrides the method
    def classifier(self):
        """The suite's classifier of this target's images (metrics/classifier.py)."""
        raise NoGroundTruth(f"target {self.name!r} has no classifier")

    def off_class(self, x: Tensor) -> Tensor:
        """True for each image the classifier puts outside the target's own classes (with ``classifier``)."""
        raise NoGroundTruth(f"target {self.name!r} has no classifier")

    def teacher_params(self) -> dict:
        """name -> true value of each parameter of the teacher (a teacher-student target)."""
        raise NoGroundTruth(f"target {self.name!r} is not a teacher")

    def region_masses(self, means, weights) -> Tensor:
        """Mass that a mixture of N(means[k], I) with ``weights`` puts in each mode's region, in closed form."""
        raise NoGroundTruth(f"target {self.name!r} has no closed-form region masses")

    def check_data(self) -> None:
        """Read and check the files the target is made of (raise ``DataError`` naming a bad file); nothing to
        read by default."""
        return None

    def has(self, capability: str) -> bool:
        """Whether this target has ``capability`` (a key of CAPABILITIES)."""
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown capability {capability!r}; valid: {', '.join(CAPABILITIES)}")
        if capability == "density":
            return bool(self.has_density)
        if capability == "modes":
            return self.has_modes
        if capability == "mixture":
            return isinstance(self, GaussianMixture)
        if capability == "image":
            return self.shape is not None
        if capability == "sample_quality":
            return bool(self.sample_quality)
        method = {"classifier": "classifier", "teacher": "teacher_params", "region_masses": "region_masses",
                  "data_files": "check_data"}[capability]
        return getattr(type(self), method) is not getattr(Target, method)

    def capabilities(self) -> list[str]:
        """The capabilities this target has, in the order of CAPABILITIES."""
        return [c for c in CAPABILITIES if self.has(c)]

    @classmethod
    def with_params(cls, name: str, doc: str | None = None, **params) -> type[Target]:
        """The member ``name`` of a parametric family: a subclass of ``cls`` whose constructor takes no argument and
        builds ``cls(**params)`` (e.g. ``HDMixture.with_params("hd_mixture8", dim=8)``). The suite's own family
        members and a suite file's ``name = { ref = "module:Class", param = value }`` are made this way."""
        def __init__(self):
            cls.__init__(self, **params)

        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return type(f"{cls.__name__}[{name}]", (cls,), {
            "name": name, "__init__": __init__, "__module__": cls.__module__, "params": dict(params),
            "__doc__": doc or f"{cls.__name__}({shown}): {(cls.__doc__ or '').strip().splitlines()[0]}"})

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
