"""The ODE flow of an energy's gradient and its density (002 eq. 4-6, algorithms/ode.py), against closed forms."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import math

import pytest
import torch

from algorithms.energies import MLPEnergy, QuadraticEnergy
from algorithms.ode import (
    ODEFlow,
    SolverFailed,
    exact_trace,
    hutchinson_trace,
    linear_flow_log_prob,
    rademacher_like,
    standard_normal_log_prob,
)
from algorithms.work import Work
from metrics.density import grid

MU = [1.0, -0.5]


def quadratic(std=0.6, dtype=torch.float64):
    return QuadraticEnergy(2, mean=MU, log_std=math.log(std)).to(dtype)


def bumpy_energy(seed=0):
    """A random swish MLP scaled so that the flow over T = 0.2 bends N(0, I) visibly (non-linear flow)."""
    torch.manual_seed(seed)
    e = MLPEnergy(2, (32, 32), "swish").double()
    with torch.no_grad():
        e.net[-1].weight.mul_(60.0)
    return e


def test_quadratic_energy_gives_the_closed_form_linear_flow():
    e = quadratic()
    flow = ODEFlow(e, T=0.2, rtol=1e-8, atol=1e-8)
    x = torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.7
    ref = linear_flow_log_prob(x, e.mean.detach(), 0.6, 0.2)
    assert torch.allclose(flow.log_prob(x), ref, atol=1e-6)
    # the forward solve is the linear map x_T = mu + c (x_0 - mu), c = exp(-T / s^2)
    x0 = torch.randn(50, 2, dtype=torch.float64)
    c = math.exp(-0.2 / 0.36)
    assert torch.allclose(flow.sample(x0), e.mean.detach() + c * (x0 - e.mean.detach()), atol=1e-7)
    # the backward solve returns the latent point
    _, back = flow.log_prob(flow.sample(x0), return_x0=True)
    assert torch.allclose(back, x0, atol=1e-6)
    # the check can fail: the density of the flow over another horizon is not this one
    assert (ODEFlow(e, T=0.3, rtol=1e-8, atol=1e-8).log_prob(x) - ref).abs().max() > 0.1


def test_float32_at_the_paper_tolerance_is_close_to_the_closed_form():
    e = quadratic(dtype=torch.float32)
    x = torch.randn(200, 2)
    lp = ODEFlow(e, T=0.2).log_prob(x)  # 002 A.1: dopri5, rtol = atol = 1e-5
    assert torch.allclose(lp, linear_flow_log_prob(x, e.mean.detach(), 0.6, 0.2), atol=1e-3)


def test_flow_density_integrates_to_one_on_a_grid():
    e = bumpy_energy()
    flow = ODEFlow(e, T=0.2, rtol=1e-6, atol=1e-6)
    pts, area = grid(((-5.0, 5.0), (-5.0, 5.0)), 120, dtype=torch.float64)
    lp = flow.log_prob(pts)
    mass = float(lp.exp().sum() * area)
    assert mass == pytest.approx(1.0, abs=1e-3)
    # negative control: dropping the trace term of eq. (6) (log p_0 of the latent point alone) is not a density
    _, x0 = flow.log_prob(pts, return_x0=True)
    wrong = float(standard_normal_log_prob(x0).exp().sum() * area)
    assert abs(wrong - 1.0) > 0.05
    # and the flow is far from the identity, so the test exercises a non-linear map
    assert (x0 - pts).norm(dim=-1).mean() > 0.2


def test_hutchinson_trace_is_unbiased_for_the_exact_trace():
    e = bumpy_energy(1)
    x = torch.randn(20, 2, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(e(x).sum(), x, create_graph=True)
    exact = exact_trace(g, x, create_graph=False)
    # the exact trace of the 2-D Hessian, from the full Hessian
    full = torch.stack([torch.autograd.functional.hessian(lambda y: e(y[None])[0], xi.detach()).trace()
                        for xi in x])
    assert torch.allclose(exact, full, atol=1e-10)
    torch.manual_seed(0)
    # the probes are Rademacher (+-1 with equal probability: E[eps eps^T] = I); a probe off that law by 10 % (e.g.
    # -0.9 / 1.1) biases the trace by about 1 %, below what the 4,000 draws below resolve
    eps = rademacher_like(torch.zeros(100_000, 2, dtype=torch.float64))
    assert set(eps.unique().tolist()) == {-1.0, 1.0} and abs(float(eps.mean())) < 0.01
    draws = torch.stack([hutchinson_trace(g, x, rademacher_like(x), create_graph=False) for _ in range(4000)])
    assert draws.std(0).mean() > 0.1 * exact.abs().mean()  # one probe is noisy (non-diagonal Hessian) ...
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - exact).abs() < 4 * se + 1e-9).all()  # ... but unbiased


def test_hutchinson_log_density_agrees_with_exact_in_expectation():
    e = bumpy_energy(2)
    x = torch.randn(6, 2, dtype=torch.float64)
    exact = ODEFlow(e, T=0.2, rtol=1e-6, atol=1e-6).log_prob(x)
    hutch = ODEFlow(e, T=0.2, rtol=1e-6, atol=1e-6, trace="hutchinson")
    torch.manual_seed(0)
    # 6 points x 32 independent probes in one solve: each row is its own Hutchinson estimate
    draws = hutch.log_prob(x.repeat(32, 1)).reshape(32, 6)
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert (draws.std(0) > 1e-3).all()
    assert ((draws.mean(0) - exact).abs() < 4 * se + 1e-6).all()


def test_maximum_likelihood_gradient_through_the_solve_matches_the_closed_form():
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.3

    def closed_form(e):
        c = torch.exp(-0.2 / torch.exp(2 * e.log_std))
        z = (x - e.mean * (1 - c)) / c
        return (-0.5 * z.pow(2).sum(-1) - 2 * torch.log(c) - math.log(2 * math.pi)).mean()

    ref_e = quadratic()
    closed_form(ref_e).backward()
    for adjoint in (False, True):
        e = quadratic()
        ODEFlow(e, T=0.2, rtol=1e-8, atol=1e-8, adjoint=adjoint).log_prob(x, grad=True).mean().backward()
        assert torch.allclose(e.mean.grad, ref_e.mean.grad, atol=1e-5), adjoint
        assert torch.allclose(e.log_std.grad, ref_e.log_std.grad, atol=1e-5), adjoint


def test_work_and_function_evaluations_are_counted():
    work = Work()
    flow = ODEFlow(quadratic(), T=0.2, work=work)
    flow.sample(torch.randn(10, 2, dtype=torch.float64))
    nfe = flow.last_nfe
    assert nfe >= 6 and work.grad_evals == 10 * nfe and work.energy_evals == 10 * nfe
    flow.log_prob(torch.randn(10, 2, dtype=torch.float64))
    # exact trace in 2-D: one energy and 1 + 2 gradient evaluations per point and function evaluation
    assert work.grad_evals == 10 * nfe + 30 * flow.last_nfe


def test_chunked_density_is_the_same_as_one_batch():
    e = bumpy_energy(3)
    x = torch.randn(40, 2, dtype=torch.float64)
    one = ODEFlow(e, rtol=1e-9, atol=1e-9).log_prob(x)
    chunked = ODEFlow(e, rtol=1e-9, atol=1e-9, chunk=7).log_prob(x)
    assert torch.allclose(one, chunked, atol=1e-6)


def test_a_stiff_energy_exhausts_the_step_budget():
    e = QuadraticEnergy(2, log_std=math.log(1e-3)).double()  # curvature 1e6: dopri5 is stability-limited
    with pytest.raises(SolverFailed):
        ODEFlow(e, T=0.2, max_steps=20).sample(torch.randn(5, 2, dtype=torch.float64))
