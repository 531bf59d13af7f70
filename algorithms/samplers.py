"""Shared samplers and chain storage. One step-size convention for the whole suite.

Convention (000 eq. 4, 003 eq. 4): the unadjusted Langevin algorithm (ULA) with step size h is

    x' = x - h grad U(x) + sqrt(2 h) xi,   xi ~ N(0, I),

targeting exp(-U). Every paper setting is converted to this h with the helpers below.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from algorithms.energies import Energy, samples_exactly
from algorithms.noise import standard_normal_like
from algorithms.work import Work


def h_from_anatomy_eps(eps: float) -> float:
    """Nijkamp et al. 2020 write x' = x - (eps^2/2) grad U + eps xi: h = eps^2 / 2.
    000's "ULA with (1.25e-1)^2/2 step size" is eps = 0.125, h = 0.0078125."""
    return eps**2 / 2


def h_from_002_eta(eta: float) -> float:
    """002 writes x' = x - (eta/2) grad E + sqrt(eta) w: h = eta / 2."""
    return eta / 2


def h_from_004_delta(delta: float) -> float:
    """004 writes x' = x + (delta^2/2) grad f + delta eps with f = -U: h = delta^2 / 2."""
    return delta**2 / 2


def ula(
    energy: Energy,
    x: Tensor,
    h: float,
    n_steps: int,
    work: Work,
    *,
    noise: bool = True,
    noise_scale: float = 1.0,
    keep_chain: bool = False,
    drift_clamp: float = 0.0,
    bounds: tuple[float, float] | None = None,
    generators=None,
) -> Tensor:
    """Run n_steps of ULA (000 Alg. 2) from x. With ``noise=False`` it is gradient descent on U with step
    h (the noise-free dynamics of 002 eq. 7 / 004). ``noise_scale`` s < 1 is the "reduced noise" heuristic
    of 002 §5.2 / Du & Mordatch 2019: x' = x - h grad U + s sqrt(2h) xi, which samples exp(-U / s^2), not
    exp(-U). Returns the final states, or with ``keep_chain`` the whole chain of shape (n, n_steps, d)
    (the states after each step).

    Two clamps of 004's public image code (not of any paper's text; off by default): ``drift_clamp`` c > 0
    limits every coordinate of the drift h grad U to [-c, c] (004's code: 0.1), ``bounds`` (lo, hi) clamps the
    states after every step (004's code: the image range [-1, 1]). Either makes the chain something else than
    ULA on exp(-U).

    Seeds trained together (algorithms/stacking.py): ``energy`` a stacked energy, x (S, n, d), and
    ``generators`` one random stream per seed for the noise (``standard_normal_like``)."""
    x = x.detach()
    scale = math.sqrt(2 * h) if noise_scale == 1.0 else noise_scale * math.sqrt(2 * h)
    chain = []
    for _ in range(n_steps):
        g = energy.grad(x, work)
        if drift_clamp > 0:
            x = x - (h * g).clamp_(-drift_clamp, drift_clamp)
        else:
            # two fused passes over (n, d) instead of four: x - h g, then + scale xi in place on the new tensor
            x = torch.add(x, g, alpha=-h)
        if noise:
            x.add_(standard_normal_like(x, generators), alpha=scale)
        if bounds is not None:
            x.clamp_(bounds[0], bounds[1])
        if keep_chain:
            chain.append(x)
    return torch.stack(chain, 1) if keep_chain else x


class ChainBank:
    """A persistent bank of chain states (PCD's replay buffer): draw a random batch, write it back."""

    def __init__(self, states: Tensor):
        self.states = states.detach().clone()

    def __len__(self):
        return self.states.shape[0]

    def draw(self, n: int, generator=None) -> tuple[Tensor, Tensor]:
        if n > len(self):
            raise ValueError(f"cannot draw {n} chains from a bank of {len(self)}")
        idx = torch.randperm(len(self), device=self.states.device, generator=generator)[:n]
        return idx, self.states[idx]

    def put(self, idx: Tensor, x: Tensor) -> None:
        self.states[idx] = x.detach()


def initial_states(kind: str, n: int, *, box, data: Tensor | None = None, device=None, dtype=None,
                   energy: Energy | None = None, generator=None) -> Tensor:
    """Where chains start: ``uniform`` on the target's box, ``normal`` N(0, I), ``data`` (random training
    points, as CD and 003's PCD do) or ``model`` (exact samples of the current model, as 003's Jarzynski
    walkers; needs an energy with ``sample_exact``). ``generator``: the random stream (default torch's global
    one); not for ``model``, which draws from the energy's own sampler."""
    d = len(box)
    if dtype is None:
        dtype = data.dtype if data is not None else torch.get_default_dtype()
    if kind == "uniform":
        lo = torch.tensor([b[0] for b in box], device=device, dtype=dtype)
        hi = torch.tensor([b[1] for b in box], device=device, dtype=dtype)
        return lo + (hi - lo) * torch.rand(n, d, device=device, dtype=dtype, generator=generator)
    if kind == "normal":
        return torch.randn(n, d, device=device, dtype=dtype, generator=generator)
    if kind == "data":
        if data is None:
            raise ValueError("initial states 'data' need the training data")
        return data[torch.randint(0, data.shape[0], (n,), device=data.device, generator=generator)].to(device)
    if kind == "model":
        if energy is None or not samples_exactly(energy):
            raise ValueError("initial states 'model' need an energy that samples itself exactly")
        return energy.sample_exact(n).to(device=device, dtype=dtype)
    raise ValueError(f"unknown initial state {kind!r}; valid: uniform, normal, data, model")
