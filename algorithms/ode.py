"""The ODE flow of an energy's gradient and its density (002 §2, eq. 4-6; Chen et al. 2018, FFJORD).

The noise-free sampling dynamics of 002 eq. (4),

    x'(t) = -grad_x E(x(t)),   x(0) = x_0 ~ p_0 = N(0, I),   t in [0, T],

define an invertible map G^T: x_0 -> x_T (eq. 5), a continuous normalizing flow. Its log-density follows
the instantaneous change of variables (eq. 6): along a path, d log p(x(t)) / dt = -tr(d f / d x) with
f = -grad E, i.e.

    log p_T(x_T) = log p_0(x_0) + int_0^T tr[ Hess_x E(x(t)) ] dt.

To evaluate log p_T at a given x (002: "solving the ODE (4) in the *reverse* direction to find the
corresponding initial point x_0 and then apply (6)") the augmented state (x, a) with
d/dt (x, a) = (-grad E(x), tr Hess E(x)) is integrated from t = T, (x, 0) down to t = 0: then x(0) = x_0
and a(0) = -int_0^T tr Hess E dt, so log p_T(x) = log p_0(x_0) - a(0).

Choices 002 leaves open, and ours:
* The trace is exact (d second-derivative passes) by default, which is cheap in 2-D; ``trace="hutchinson"``
  uses tr H ~ eps^T H eps with one Rademacher eps per point, drawn once per solve and held fixed along it
  (Grathwohl et al. 2018), unbiased for every d.
* Solver: torchdiffeq's dopri5 with rtol = atol = 1e-5 (002 A.1, "the solver implemented by Chen et al.");
  the step control runs on the whole batch, so densities are evaluated in fixed chunks (``chunk``) to keep
  a point's value independent of how many other points are evaluated with it.
* Differentiating through a solve (the generator loss, eq. 12, and maximum likelihood of eq. 6): either
  back-propagation through the solver's operations (``adjoint=False``, exact gradient of the computed
  solution) or the adjoint method (``adjoint=True``, torchdiffeq.odeint_adjoint, constant memory).
* A solve that exceeds ``max_steps`` accepted steps raises ``SolverFailed`` (a stiff, diverging energy).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from algorithms.work import Work


class SolverFailed(RuntimeError):
    """The adaptive solver exceeded its step budget or produced non-finite states."""


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I): the latent density p_0 of 002 (A.1: "random samples from 2-d standard Gaussian")."""
    return -0.5 * x.pow(2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


def grad_input(x: Tensor) -> Tensor:
    """x itself when it is already part of a graph (differentiating through the solve), else a detached
    leaf that requires grad (only grad_x E is wanted)."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def exact_trace(g: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """tr d g / d x per point, from g = grad_x E(x) built with create_graph: d extra backward passes."""
    tr = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(x.shape[1]):
        (row,) = torch.autograd.grad(g[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
        tr = tr + row[:, i]
    return tr


def hutchinson_trace(g: Tensor, x: Tensor, eps: Tensor, create_graph: bool) -> Tensor:
    """eps^T (d g / d x) eps per point: an unbiased estimate of the trace for E[eps eps^T] = I."""
    (v,) = torch.autograd.grad((g * eps).sum(), x, create_graph=create_graph, retain_graph=True)
    return (v * eps).sum(-1)


def rademacher_like(x: Tensor) -> Tensor:
    return torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1


class GradientField(nn.Module):
    """f(t, x) = -grad_x E(x) (002 eq. 4). ``create_graph``: keep the graph to theta (to differentiate through
    the dynamics). Counts its evaluations (``nfe``) and, per point, one energy and one gradient in ``work``."""

    def __init__(self, energy: nn.Module, work: Work | None = None, create_graph: bool = False):
        super().__init__()
        self.energy = energy
        self.work = work
        self.create_graph = create_graph
        self.nfe = 0

    def forward(self, t, x):
        with torch.enable_grad():
            x = grad_input(x)
            (g,) = torch.autograd.grad(self.energy(x).sum(), x, create_graph=self.create_graph)
        self.nfe += 1
        if self.work is not None:
            self.work.energy_evals += x.shape[0]
            self.work.grad_evals += x.shape[0]
        return -g


class DensityField(GradientField):
    """d/dt (x, a) = (-grad E(x), tr Hess E(x)): the augmented dynamics of eq. (6). Work: one energy
    evaluation and 1 + d (exact trace) or 2 (Hutchinson) gradient evaluations per point."""

    def __init__(self, energy, work=None, create_graph=False, trace: str = "exact"):
        super().__init__(energy, work, create_graph)
        if trace not in ("exact", "hutchinson"):
            raise ValueError(f"unknown trace {trace!r}; valid: exact, hutchinson")
        self.trace = trace
        self.eps: Tensor | None = None

    def forward(self, t, state):
        x, _ = state
        with torch.enable_grad():
            x = grad_input(x)
            (g,) = torch.autograd.grad(self.energy(x).sum(), x, create_graph=True)
            if self.trace == "exact":
                tr = exact_trace(g, x, self.create_graph)
            else:
                tr = hutchinson_trace(g, x, self.eps, self.create_graph)
        if not self.create_graph:
            g, tr = g.detach(), tr.detach()
        self.nfe += 1
        if self.work is not None:
            n = x.shape[0]
            self.work.energy_evals += n
            self.work.grad_evals += n * (1 + (x.shape[1] if self.trace == "exact" else 1))
        return -g, tr


def _solve(field, y0, t, rtol, atol, method, max_steps, adjoint):
    options = {"max_num_steps": max_steps} if method in ("dopri5", "dopri8", "bosh3", "adaptive_heun") else None
    try:
        if adjoint:
            params = tuple(p for p in field.energy.parameters() if p.requires_grad)
            return odeint_adjoint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                                  adjoint_params=params)
        return odeint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    except AssertionError as e:  # torchdiffeq signals an exhausted step budget with an assertion
        raise SolverFailed(str(e)) from None


class ODEFlow:
    """The generator G^T of 002 eq. (5) for an energy, with its density (eq. 6).

    ``sample(x0)``: x_T from x_0 (forward solve). ``log_prob(x)``: log p_T(x) by the backward solve.
    ``trajectory(x0, n)``: the states at n equally spaced times in (0, T]. ``grad=True`` keeps the graph to
    the energy's parameters (directly or by the adjoint method). ``last_nfe``: function evaluations of the
    last call (forward solve only; the adjoint's backward solve is not counted)."""

    def __init__(self, energy, T: float = 0.2, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                 trace: str = "exact", adjoint: bool = False, max_steps: int = 1000, chunk: int = 10_000,
                 work: Work | None = None):
        if T <= 0:
            raise ValueError(f"the integration time T must be positive, got {T}")
        self.energy, self.T, self.rtol, self.atol, self.method = energy, T, rtol, atol, method
        self.trace, self.adjoint, self.max_steps, self.chunk = trace, adjoint, max_steps, chunk
        self.work = work if work is not None else Work()
        self.last_nfe = 0

    def _times(self, ref: Tensor, *ts: float) -> Tensor:
        return torch.tensor(ts, dtype=torch.float64 if ref.dtype == torch.float64 else torch.float32,
                            device=ref.device)

    def _check(self, y: Tensor) -> Tensor:
        if not torch.isfinite(y).all():
            raise SolverFailed("non-finite states in the ODE solve")
        return y

    def sample(self, x0: Tensor, grad: bool = False) -> Tensor:
        """x_T = ODESolve(-grad E, x_0, [0, T]) (002 eq. 5)."""
        return self.trajectory(x0, 1, grad=grad)[-1]

    def trajectory(self, x0: Tensor, n_times: int, grad: bool = False) -> Tensor:
        """States at times T k / n_times, k = 1..n_times: shape (n_times, n, d)."""
        field = GradientField(self.energy, self.work, create_graph=grad)
        t = self._times(x0, *[self.T * k / n_times for k in range(n_times + 1)])
        with torch.set_grad_enabled(grad):
            ys = _solve(field, x0 if grad else x0.detach(), t, self.rtol, self.atol, self.method, self.max_steps,
                        self.adjoint and grad)
        self.last_nfe = field.nfe
        return self._check(ys[1:])

    def log_prob(self, x: Tensor, grad: bool = False, return_x0: bool = False, trace: str | None = None):
        """log p_T(x) by the instantaneous change of variables (002 eq. 6), solving backward from T to 0.
        Evaluated in chunks of ``chunk`` points unless ``grad`` (a training batch is one chunk). ``trace``
        overrides the flow's trace estimator for this call."""
        trace = trace or self.trace
        if grad or x.shape[0] <= self.chunk:
            lp, x0, nfe = self._log_prob(x, grad, trace)
        else:
            parts = [self._log_prob(c, False, trace) for c in x.split(self.chunk)]
            lp, x0 = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            nfe = sum(p[2] for p in parts)
        self.last_nfe = nfe
        return (lp, x0) if return_x0 else lp

    def _log_prob(self, x, grad, trace):
        field = DensityField(self.energy, self.work, create_graph=grad, trace=trace)
        if trace == "hutchinson":
            field.eps = rademacher_like(x)
        a_T = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        t = self._times(x, self.T, 0.0)
        with torch.set_grad_enabled(grad):
            xs, a = _solve(field, (x if grad else x.detach(), a_T), t, self.rtol, self.atol, self.method,
                           self.max_steps, self.adjoint and grad)
            x0, a0 = self._check(xs[-1]), self._check(a[-1])
            lp = standard_normal_log_prob(x0) - a0
        return lp, x0, field.nfe


def linear_flow_log_prob(x: Tensor, mean: Tensor, std: float, T: float) -> Tensor:
    """Closed form for the quadratic energy E(x) = |x - mu|^2 / (2 s^2) and p_0 = N(0, I): the flow is
    linear, x_T = mu + (x_0 - mu) c with c = exp(-T / s^2), so x_T ~ N(mu (1 - c), c^2 I)."""
    c = math.exp(-T / std**2)
    d = x.shape[-1]
    z = (x - mean * (1 - c)) / c
    return -0.5 * z.pow(2).sum(-1) - d * math.log(c) - 0.5 * d * math.log(2 * math.pi)
