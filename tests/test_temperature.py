"""The energy temperature (U = f / T) of Nijkamp et al. 2020's code, which 000 App. C.1 follows for ULA-EBM: known
answers for the energy, its gradient, one ULA step (the code's x' = x - grad f + eps xi with h = T = eps^2 / 2) and
one SGD step of the contrastive update (the code's learning rate lr_init on f is lr_init * T on U)."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import math

import pytest
import torch

from algorithms.contrastive import contrastive_update
from algorithms.energies import ToyMLP, make_energy
from algorithms.samplers import h_from_anatomy_eps, ula
from algorithms.work import Work
from bench.errors import BenchError
from bench.suite import TrainConfig, dry_run, load_suite, resolve_cells

T = 0.0078125  # 000's "(1.25e-1)^2/2"


def pair(temperature):
    """A plain toy MLP f and the same network at temperature T (same parameters)."""
    torch.manual_seed(0)
    f = ToyMLP()
    u = ToyMLP(temperature=temperature)
    u.load_state_dict(f.state_dict())
    return f, u


def test_energy_and_gradient_are_divided_by_the_temperature():
    f, u = pair(T)
    x = torch.randn(50, 2)
    assert torch.allclose(u(x), f(x) / T, rtol=1e-6)
    v, g = u.value_and_grad(x, Work())  # the chain rule written out (MLPEnergy's fast path)
    vf, gf = f.value_and_grad(x, Work())
    assert torch.allclose(v, vf / T, rtol=1e-6) and torch.allclose(g, gf / T, rtol=1e-5)
    xr = x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(u(xr).sum(), xr)  # autograd through forward
    assert torch.allclose(g, ga, rtol=1e-5, atol=1e-6)


def test_one_ula_step_at_h_equal_t_is_the_anatomy_codes_step():
    """x' = x - h grad(f / T) at h = T is x - grad f: the code's drift; its noise eps = sqrt(2 T) = sqrt(2 h)."""
    f, u = pair(T)
    x = torch.randn(20, 2)
    h = h_from_anatomy_eps(0.125)
    assert h == T
    moved = ula(u, x, h, 1, Work(), noise=False)
    assert torch.allclose(moved, x - f.grad(x, Work()), atol=1e-6)


def test_sgd_at_lr_times_t_on_u_is_sgd_at_lr_on_f():
    """The code scales its SGD learning rate by eps^2 / 2 and its loss by 2 / eps^2: one step on U = f / T with
    lr_init * T moves the parameters exactly as one step with lr_init on f."""
    f, u = pair(T)
    x_pos, x_neg = torch.randn(64, 2), 3 * torch.randn(64, 2)
    lr_init = 0.01
    contrastive_update(f, torch.optim.SGD(f.parameters(), lr=lr_init), x_pos, x_neg, 0.0, Work())
    contrastive_update(u, torch.optim.SGD(u.parameters(), lr=lr_init * T), x_pos, x_neg, 0.0, Work())
    for a, b in zip(f.parameters(), u.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_temperature_is_checked():
    assert make_energy("toy_mlp", 2, temperature=T).temperature == T
    assert make_energy("toy_mlp", 2).temperature == 1.0
    with pytest.raises(ValueError, match="energy 'quadratic' has no temperature"):
        make_energy("quadratic", 2, temperature=0.5)
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            ToyMLP(temperature=bad)
    assert TrainConfig().temperature == 1.0


def test_a_suite_cell_with_a_temperature_its_energy_cannot_take_fails_before_compute():
    (cell,) = resolve_cells(load_suite("gmm50d"), "smoke", ["pcd"], None, 1)
    cell.train.temperature = 0.5
    with pytest.raises(BenchError, match="energy 'gmm_student' has no temperature"):
        dry_run([cell])


def test_toy2d_paper_ula_baselines_use_the_codes_convention():
    """000 App. C.1: ULA-EBM's temperature and learning rate follow Nijkamp et al. 2020: T = h, SGD at 1e-2 x T.
    CD and short-run share ULA-EBM's settings; the flow-based algorithms keep U = f."""
    cells = resolve_cells(load_suite("toy2d"), "paper", None, None, 1)
    for c in cells:
        if c.algorithm in ("ula_ebm", "cd", "short_run"):
            assert c.train.temperature == c.algo.step_size, (c.algorithm, c.target)
            assert c.algo.optimizer == "sgd" and c.algo.lr == pytest.approx(1e-2 * c.algo.step_size)
        else:
            assert c.train.temperature == 1.0
    assert {c.settings for c in cells if c.algorithm == "ula_ebm"} == {"paper"}
