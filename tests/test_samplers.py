"""Energies, the shared ULA sampler, step-size conventions, work counting and chain storage."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import math

import pytest
import torch

from algorithms.energies import MLPEnergy, QuadraticEnergy, ToyMLP, make_energy
from algorithms.samplers import (
    ChainBank,
    h_from_002_eta,
    h_from_004_delta,
    h_from_anatomy_eps,
    initial_states,
    ula,
)
from algorithms.work import Work

# ---------------------------------------------------------------- energies


def test_toy_mlp_has_10593_parameters():
    net = ToyMLP()
    assert sum(p.numel() for p in net.parameters()) == 10_593
    widths = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 64, 64, 64, 1]
    slopes = [m.negative_slope for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.05] * 4
    assert net(torch.zeros(5, 2)).shape == (5,)


def test_make_energy_unknown_name_and_activation():
    with pytest.raises(ValueError):
        make_energy("nope", 2)
    with pytest.raises(ValueError):
        MLPEnergy(2, (8,), activation="nope")
    assert isinstance(make_energy("quadratic", 3), QuadraticEnergy)


def test_quadratic_energy_value_grad_and_log_z():
    e = QuadraticEnergy(2, mean=[1.0, -2.0], log_std=math.log(0.5))
    x = torch.tensor([[1.0, -2.0], [2.0, 0.0]])
    w = Work()
    u, g = e.value_and_grad(x, w)
    # U = |x - m|^2 / (2 s^2), s = 0.5: at (2, 0) |x - m|^2 = 5 -> U = 10; grad = (x - m) / s^2
    torch.testing.assert_close(u, torch.tensor([0.0, 10.0]))
    torch.testing.assert_close(g, torch.tensor([[0.0, 0.0], [4.0, 8.0]]))
    assert not u.requires_grad
    assert (w.energy_evals, w.grad_evals) == (2, 2)
    assert e.log_z().item() == pytest.approx(2 * (math.log(0.5) + 0.5 * math.log(2 * math.pi)), rel=1e-6)
    e.value(x, w)
    assert (w.energy_evals, w.grad_evals) == (4, 2)


class _OwnValueAndGrad(ToyMLP):
    """A subclass with a value_and_grad of its own (twice the MLP's gradient): ``grad`` must use it."""

    def value_and_grad(self, x, work):
        u, g = super().value_and_grad(x, work)
        return u, 2 * g


@pytest.mark.parametrize("temperature", [1.0, 0.0078125])
def test_mlp_grad_alone_is_value_and_grads_gradient(temperature):
    """``MLPEnergy.grad`` (what ULA calls) skips the output layer's value: the same gradient, bit for bit, and the
    same work; a hooked energy (autograd) and a subclass's own value_and_grad are honoured."""
    torch.manual_seed(0)
    e = ToyMLP(temperature=temperature)
    x = 3 * torch.randn(257, 2)
    w1, w2 = Work(), Work()
    assert torch.equal(e.grad(x, w1), e.value_and_grad(x, w2)[1])
    assert w1.as_dict() == w2.as_dict() == {**w1.as_dict(), "energy_evals": 257, "grad_evals": 257}
    hooked = MLPEnergy(2, (8, 8))
    hooked.register_forward_hook(lambda mod, inp, out: out + inp[0].pow(2).sum(-1))  # U + |x|^2: autograd sees it
    xr = x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(hooked(xr).sum(), xr)
    torch.testing.assert_close(hooked.grad(x, Work()), ga)
    own = _OwnValueAndGrad()
    own.load_state_dict(ToyMLP().state_dict())
    torch.testing.assert_close(own.grad(x, Work()), 2 * ToyMLP.value_and_grad(own, x, Work())[1])


# ---------------------------------------------------------------- ULA


@pytest.mark.parametrize("h", [0.1, 0.5])
def test_ula_stationary_law_on_a_gaussian(h):
    """For U = |x - m|^2 / 2, ULA is x' = (1 - h) x + h m + sqrt(2h) xi: an AR(1) chain with mean m and
    stationary variance 2h / (1 - (1 - h)^2) = 1 / (1 - h/2) (not 1: ULA's bias)."""
    torch.manual_seed(0)
    m = torch.tensor([1.0, -2.0])
    e = QuadraticEnergy(2, mean=m, log_std=0.0)
    n = 50_000
    x0 = torch.full((n, 2), 4.0)  # far from m: the chain has to get there
    x = ula(e, x0, h, 300, Work())
    mean, var = x.double().mean(0), x.double().var(0)
    v = 1 / (1 - h / 2)
    se_mean = math.sqrt(v / n)
    se_var = v * math.sqrt(2 / (n - 1))
    assert torch.all((mean - m.double()).abs() < 4 * se_mean), mean
    assert torch.all((var - v).abs() < 4 * se_var), (var, v)
    # the check can tell the ULA variance from the target's variance 1
    assert torch.all((var - 1.0).abs() > 4 * se_var), var
    # no cross-correlation between coordinates
    c = torch.corrcoef(x.double().T)[0, 1]
    assert abs(c.item()) < 4 / math.sqrt(n)


def test_ula_without_noise_is_gradient_descent():
    torch.manual_seed(0)
    m = torch.tensor([0.5, -1.5])
    e = QuadraticEnergy(2, mean=m, log_std=math.log(2.0))
    x0 = torch.randn(50, 2) * 3
    x = ula(e, x0, 0.5, 1, Work(), noise=False)
    # one exact gradient step: x - h (x - m) / s^2
    torch.testing.assert_close(x, x0 - 0.5 * (x0 - m) / 4.0)
    x = ula(e, x0, 0.5, 400, Work(), noise=False)
    torch.testing.assert_close(x, m.expand(50, 2), atol=1e-5, rtol=0)
    # and it is deterministic: the global RNG is untouched
    state = torch.get_rng_state()
    ula(e, x0, 0.5, 10, Work(), noise=False)
    assert torch.equal(state, torch.get_rng_state())


def test_ula_work_counting_and_keep_chain():
    e = QuadraticEnergy(3)
    n, k = 7, 5
    w = Work(energy_evals=11, grad_evals=13, flow_passes=2)
    x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    chain = ula(e, x0, 0.05, k, w, keep_chain=True)
    assert chain.shape == (n, k, 3)
    assert w.as_dict() == {"energy_evals": 11 + n * k, "grad_evals": 13 + n * k, "flow_passes": 2}
    torch.manual_seed(1)
    final = ula(e, x0, 0.05, k, Work())
    torch.testing.assert_close(chain[:, -1], final)
    # the chain holds the states after each step, not the start
    assert not torch.allclose(chain[:, 0], x0)
    torch.manual_seed(1)
    one = ula(e, x0, 0.05, 1, Work())
    torch.testing.assert_close(chain[:, 0], one)
    # the input is not modified and no autograd graph leaks out
    assert not final.requires_grad and not chain.requires_grad


def test_ula_with_zero_steps_returns_the_input():
    x0 = torch.randn(4, 2)
    w = Work()
    torch.testing.assert_close(ula(QuadraticEnergy(2), x0, 0.1, 0, w), x0)
    assert w.grad_evals == 0


# ---------------------------------------------------------------- step sizes


def test_step_size_conversions():
    assert h_from_anatomy_eps(0.125) == 0.0078125
    assert h_from_002_eta(0.01) == pytest.approx(0.005, rel=1e-15)
    assert h_from_004_delta(0.1) == pytest.approx(0.005, rel=1e-12)
    assert h_from_004_delta(0.03) == pytest.approx(0.00045, rel=1e-12)
    # each paper's noise scale equals sqrt(2 h) of the suite's convention
    for eps in (0.01, 0.125, 1.0):
        assert math.sqrt(2 * h_from_anatomy_eps(eps)) == pytest.approx(eps, rel=1e-12)
        assert math.sqrt(2 * h_from_004_delta(eps)) == pytest.approx(eps, rel=1e-12)
    for eta in (1e-4, 0.01, 0.5):
        assert math.sqrt(2 * h_from_002_eta(eta)) == pytest.approx(math.sqrt(eta), rel=1e-12)


# ---------------------------------------------------------------- chain storage and starts


def test_chain_bank_round_trip():
    states = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    bank = ChainBank(states)
    assert len(bank) == 10
    states[0] = -1.0  # the bank holds its own copy
    assert bank.states[0].tolist() == [0.0, 1.0]
    torch.manual_seed(0)
    idx, x = bank.draw(4)
    assert idx.shape == (4,) and x.shape == (4, 2)
    assert len(set(idx.tolist())) == 4
    torch.testing.assert_close(x, bank.states[idx])
    before = bank.states.clone()
    bank.put(idx, x + 100)
    torch.testing.assert_close(bank.states[idx], x + 100)
    rest = torch.ones(10, dtype=torch.bool)
    rest[idx] = False
    torch.testing.assert_close(bank.states[rest], before[rest])
    # the whole bank can be drawn (a permutation), but no more
    idx_all, _ = bank.draw(10)
    assert sorted(idx_all.tolist()) == list(range(10))
    with pytest.raises(ValueError):
        bank.draw(11)


def test_chain_bank_put_detaches():
    bank = ChainBank(torch.zeros(3, 2))
    y = torch.ones(2, 2, requires_grad=True)
    bank.put(torch.tensor([0, 2]), y * 2)
    assert not bank.states.requires_grad
    assert bank.states.tolist() == [[2.0, 2.0], [0.0, 0.0], [2.0, 2.0]]


def test_initial_states():
    torch.manual_seed(0)
    box = ((-1.0, 1.0), (-2.0, 3.0))
    u = initial_states("uniform", 5000, box=box)
    assert u.shape == (5000, 2)
    for k, (lo, hi) in enumerate(box):
        assert u[:, k].min() >= lo and u[:, k].max() <= hi
        # fills the box rather than a corner of it
        assert u[:, k].min() < lo + 0.01 * (hi - lo) and u[:, k].max() > hi - 0.01 * (hi - lo)
    nrm = initial_states("normal", 5000, box=box)
    assert nrm.shape == (5000, 2)
    assert abs(nrm.std().item() - 1) < 0.05
    data = torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    d = initial_states("data", 50, box=box, data=data)
    assert d.shape == (50, 2)
    assert {tuple(r) for r in d.tolist()} <= {tuple(r) for r in data.tolist()}
    with pytest.raises(ValueError):
        initial_states("data", 5, box=box)
    with pytest.raises(ValueError, match="unknown"):
        initial_states("nope", 5, box=box)


def test_reduced_noise_ula_samples_a_colder_density():
    """noise_scale s (002 §5.2's reduced noise): on U = x^2/2 the discrete chain's stationary variance is
    s^2 / (1 - h/2), i.e. the chain samples exp(-U / s^2) instead of exp(-U)."""
    torch.manual_seed(0)
    energy = QuadraticEnergy(1)
    h, s = 0.1, 0.3
    x = ula(energy, torch.zeros(50_000, 1), h, 300, Work(), noise_scale=s)
    assert float(x.var()) == pytest.approx(s**2 / (1 - h / 2), rel=0.03)
    torch.manual_seed(1)
    y0 = torch.randn(10, 1)
    torch.manual_seed(2)
    a = ula(energy, y0, h, 5, Work())
    torch.manual_seed(2)
    b = ula(energy, y0, h, 5, Work(), noise_scale=1.0)
    assert torch.equal(a, b)
