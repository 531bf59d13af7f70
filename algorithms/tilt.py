"""Tilted EBMs: the model p(x) = exp(-E_theta(x)) r(x) / Z with a fixed reference density r.

000 eq. (6) tilts the EBM by the flow's base rho (flowMC-EBM); 001 eq. (7) by the pre-trained flow q_alpha
(NT-EBM, NCE-EBM). The model's full energy is U(x) = E_theta(x) - log r(x).

The runner measures a model through the energy object it handed to the algorithm (``energy(x)`` on the
evaluation grid and the test points). ``tilt`` therefore makes that object's ``energy(x)`` return U with a
forward hook (a public torch.nn mechanism), so every measurement and every sampler that calls the energy
sees the full model; ``Raw(energy)`` (``energy.forward``) is E_theta alone. As r does not depend on theta,
grad_theta U = grad_theta E_theta: the maximum-likelihood gradient (000 eq. 2-3 and App. B) is unchanged.

An exact ``log_z()`` / ``sample_exact()`` of the untilted energy would be wrong for the tilted model: after
``tilt`` they raise instead of answering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from algorithms.energies import Energy


class TiltedModelError(RuntimeError):
    """Asked for an exact quantity of the untilted energy on a tilted model."""


def tilt(energy: Energy, neg_log_reference: Callable[[Tensor], Tensor]) -> None:
    """From now on ``energy(x)`` returns E_theta(x) + neg_log_reference(x) = E_theta(x) - log r(x)."""
    if getattr(energy, "_tilted", False):
        raise ValueError("this energy is already tilted")

    def hook(module, args, out):
        return out + neg_log_reference(args[0]).to(out)

    energy.register_forward_hook(hook)
    object.__setattr__(energy, "_tilted", True)
    object.__setattr__(energy, "_reference", neg_log_reference)
    for name in ("log_z", "sample_exact"):
        if hasattr(energy, name):
            object.__setattr__(energy, name, _refuse(name))


@dataclass(frozen=True)
class GaussianReference:
    """-log r(x) up to a constant for r = N(0, s^2 I): |x|^2 / (2 s^2), and its gradient x / s^2, written out so
    that an energy tilted by it is still differentiated by hand where its members are stacked
    (algorithms/stacking.py: the same numbers as autograd through the tilt)."""

    std: float

    def __call__(self, x: Tensor) -> Tensor:
        return 0.5 * x.pow(2).sum(-1) / self.std**2

    def grad(self, x: Tensor) -> Tensor:
        return x * (1.0 / self.std**2)  # as autograd forms it (a multiplication by the rounded 1 / s^2)


def _refuse(name):
    def f(*args, **kwargs):
        raise TiltedModelError(f"{name}() describes exp(-E) alone, not the tilted model exp(-E) r")
    return f


class Raw(Energy):
    """E_theta alone (the energy's own forward, without the tilt); shares the energy's parameters."""

    def __init__(self, energy: Energy):
        super().__init__()
        self.inner = energy

    def forward(self, x):
        return self.inner.forward(x)


def zero_last_layer(energy: Energy) -> bool:
    """Zero the weight and bias of the energy's last ``nn.Linear`` (or, without one, its last ``nn.Conv2d``)
    so that E_theta0 = 0 exactly (000 §3:
    "choosing initially theta_0 such that E_theta0 = 0"). Returns False when the energy has no linear layer
    (e.g. the parametric test energies), which is then left as it is."""
    import torch.nn as nn

    linears = [m for m in energy.modules() if isinstance(m, nn.Linear)]
    if not linears:  # a convolutional energy: its last convolution (algorithms/conv_energies.py)
        linears = [m for m in energy.modules() if isinstance(m, nn.Conv2d)]
    if not linears:
        return False
    nn.init.zeros_(linears[-1].weight)
    nn.init.zeros_(linears[-1].bias)
    return True
