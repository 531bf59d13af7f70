"""002's algorithms (algorithms/noise_free.py): noise-free Euler / ODE generators, the self-adversarial loss of
eq. (12) and the ODE flow trained by maximum likelihood. Each learns on a tiny case with a closed-form answer;
the generator loss differentiates only through the dynamics."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import dataclasses
import math

import pandas as pd
import pytest
import torch

import algorithms
from algorithms.base import Problem, build_config
from algorithms.energies import MLPEnergy, QuadraticEnergy
from algorithms.noise_free import euler_dynamics, stopped_energy
from algorithms.ode import ODEFlow
from algorithms.samplers import ula
from algorithms.work import Work
from bench.cli import main
from bench.suite import load_suite, resolve_cells
from datasets import GaussianMixture

MU = torch.tensor([1.0, -0.5])
STD = 0.5
T, K, H = 0.2, 20, 0.01  # the suite's horizon: K h = T


def gaussian():
    return GaussianMixture(means=[MU.tolist()], stds=STD, weights=[1.0], box=[(-2.0, 3.0), (-3.0, 2.0)])


def make(name, energy, **params):
    torch.manual_seed(0)
    target = gaussian()
    data = target.sample(4096, torch.Generator().manual_seed(1))
    cls = algorithms.ALGORITHMS[name]
    names = {f.name for f in dataclasses.fields(cls.Config)}
    base = {"lr": 0.05, "n_steps": K, "step_size": H, "T": T, "rtol": 1e-4, "atol": 1e-4}
    cfg = build_config(cls.Config, {**{k: v for k, v in base.items() if k in names}, **params}, "test")
    return cls(Problem(target, data, work=Work()), energy, cfg), data


def train(alg, data, n_iters, batch=256):
    for i in range(n_iters):
        start = (i * batch) % data.shape[0]
        logs = alg.step(data[start:start + batch])
    return logs


# --- closed forms for the quadratic energy E(x) = |x - mu|^2 / (2 s^2) ----------------------------------
# Both generators are linear: x_gen = mu + c (x_0 - mu), x_0 ~ N(0, I), with c = exp(-T / s^2) (ODE) or
# (1 - h / s^2)^K (Euler). dc / dlog s is written dc.
def ode_c(log_s):
    return math.exp(-T / math.exp(2 * log_s))


def ode_dc(log_s):
    return ode_c(log_s) * 2 * T / math.exp(2 * log_s)


def euler_c(log_s):
    return (1 - H / math.exp(2 * log_s)) ** K


def euler_dc(log_s):
    return K * (1 - H / math.exp(2 * log_s)) ** (K - 1) * 2 * H / math.exp(2 * log_s)


def fixed_point(c_of, dc_of, w):
    """(mu, s) where the expected gradient of eq. (1) (w = 0) or of eq. (12) (w = 1) vanishes, data N(MU, STD^2 I):
    d/dmu:     -(MU - mu) - c mu - w c (1 - c) mu = 0
    d/dlog s:  c^2 (|mu|^2 + d) + w c dc (|mu|^2 + d) = |MU - mu|^2 + d STD^2.
    With w = 0 the generator matches the data's mean and variance and mu = MU / (1 - c) != MU: the EBM's own
    density is not the data's (002 §5.1). Maximum likelihood of the flow has the same fixed point."""

    def parts(log_s):
        c, dc = c_of(log_s), dc_of(log_s)
        mu = MU.double() / (1 - c - w * c * (1 - c))
        m2 = float(mu @ mu) + 2
        return c * c * m2 + w * c * dc * m2 - (float((MU - mu) @ (MU - mu)) + 2 * STD**2), mu

    lo, hi = math.log(0.15), math.log(20.0)
    flo = parts(lo)[0]
    for _ in range(100):
        mid = (lo + hi) / 2
        fm = parts(mid)[0]
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return parts(lo)[1].float(), math.exp(lo)


CASES = [
    ("noise_free_euler", {}, euler_c, euler_dc, 0.0, 150),
    ("noise_free_ode", {}, ode_c, ode_dc, 0.0, 150),
    ("self_adversarial", {}, euler_c, euler_dc, 1.0, 150),
    ("self_adversarial", {"dynamics": "ode"}, ode_c, ode_dc, 1.0, 150),
    ("ode_flow_ml", {}, ode_c, ode_dc, 0.0, 120),
]


@pytest.mark.parametrize("name,params,c_of,dc_of,w,n_iters", CASES,
                         ids=["euler", "ode", "selfadv_euler", "selfadv_ode", "ode_flow_ml"])
def test_learns_the_closed_form_fixed_point_on_a_gaussian(name, params, c_of, dc_of, w, n_iters):
    energy = QuadraticEnergy(2)
    alg, data = make(name, energy, **params)
    train(alg, data, n_iters)
    mu, s = fixed_point(c_of, dc_of, w)
    assert torch.allclose(energy.mean.detach(), mu, atol=0.1), (energy.mean, mu)
    assert abs(float(energy.log_std.detach().exp()) - s) < 0.04, (float(energy.log_std.detach().exp()), s)
    # the check can fail: the other objective's fixed point is far away
    other_mu, other_s = fixed_point(c_of, dc_of, 1.0 - w)
    assert (other_mu - mu).norm() > 0.3 and abs(other_s - s) > 0.1
    x = alg.draw_negatives(8192)
    if w == 0:
        # the generator, not the EBM, learns the data: samples ~ N(MU, STD^2 I), while the EBM sits at 2 MU
        assert torch.allclose(x.mean(0), MU, atol=0.1) and torch.allclose(x.std(0), torch.full((2,), STD), atol=0.06)
        assert (energy.mean.detach() - MU).norm() > 0.8
    assert alg.negatives().shape == (256, 2)


def test_the_flow_log_likelihood_metric_is_the_closed_form():
    energy = QuadraticEnergy(2, mean=[0.5, 0.0], log_std=math.log(0.6))
    alg, _ = make("noise_free_ode", energy, rtol=1e-6, atol=1e-6, density_grid=60)
    test = gaussian().test_set(2000)
    c = math.exp(-T / 0.36)
    mean = torch.tensor([0.5, 0.0]) * (1 - c)
    ref = (-0.5 * ((test - mean) / c).pow(2).sum(-1) - 2 * math.log(c) - math.log(2 * math.pi)).mean()
    m = alg.extra_metrics(test)
    assert m["flow_test_loglik"] == pytest.approx(float(ref), abs=1e-3)
    assert m["flow_kl"] == pytest.approx(float(gaussian().log_prob(test.double()).mean() - ref), abs=1e-3)
    assert m["flow_eval_nfe"] > 0
    # the box of this target holds the flow (N(0.5 (1-c), c^2 I), c = 0.57) up to ~3 % of its mass
    assert 0.9 < m["flow_grid_mass"] <= 1.001
    art = alg.extra_artifacts(gaussian().box, 200)
    assert art["flow_grid_log_density"].shape == (60, 60)
    euler, _ = make("noise_free_euler", QuadraticEnergy(2))
    assert euler.extra_artifacts(gaussian().box, 50) == {} and "flow_test_loglik" not in euler.extra_metrics(test)


# --- where the generator loss of eq. (12) sends gradients --------------------------------------------------
def test_differentiable_euler_is_eq7_and_matches_the_sampler():
    energy = MLPEnergy(2, (16, 16), "swish")
    x0 = torch.randn(32, 2)
    plain = ula(energy, x0, H, K, Work(), noise=False)
    diff = euler_dynamics(energy, x0, H, K, Work(), create_graph=True)
    assert diff.requires_grad and torch.allclose(plain, diff.detach(), atol=1e-6)


def test_generator_term_gradient_is_the_closed_form_through_the_dynamics_only():
    """E_sg(theta)(G_theta(x_0)) for the quadratic energy and Euler: d/dmu = mean_x0 c (1 - c) (x_0 - mu) / s^2,
    d/dlog s = mean c dc |x_0 - mu|^2 / s^2. Without the stop-gradient on E the result would differ."""
    energy = QuadraticEnergy(2, mean=[0.3, -0.2], log_std=math.log(0.7))
    alg, data = make("self_adversarial", energy)
    torch.manual_seed(5)
    x0 = torch.randn(512, 2)
    _, gen, x_gen = alg.loss_terms(data[:256], x0)
    g_mu, g_ls = torch.autograd.grad(gen, [energy.mean, energy.log_std], retain_graph=True)
    mu, s2, ls = energy.mean.detach(), 0.49, math.log(0.7)
    c, dc = euler_c(ls), euler_dc(ls)
    assert torch.allclose(g_mu, (c * (1 - c) * (x0 - mu)).mean(0) / s2, atol=1e-5)
    assert float(g_ls) == pytest.approx(float((c * dc * (x0 - mu).pow(2).sum(-1)).mean() / s2), rel=1e-4)
    # negative control: the same term without the stop-gradient on the energy's parameters
    wrong_mu, _ = torch.autograd.grad(energy(x_gen).mean(), [energy.mean, energy.log_std])
    assert (wrong_mu - g_mu).norm() > 0.1


def test_which_parameters_the_generator_loss_reaches():
    """The final bias shifts E but not grad E, so it does not move G_theta: the generator term gives it exactly
    zero gradient (it would get 1 if the energy were not stopped); every weight of the network gets some."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, (16, 16), "swish")
    for dynamics in ("euler", "ode"):
        alg, data = make("self_adversarial", energy, dynamics=dynamics)
        _, gen, x_gen = alg.loss_terms(data[:64], torch.randn(64, 2))
        named = dict(energy.named_parameters())
        grads = dict(zip(named, torch.autograd.grad(gen, list(named.values()), allow_unused=True), strict=True))
        last_bias = "net.4.bias"
        assert grads[last_bias] is None or float(grads[last_bias].abs().max()) == 0.0
        assert all(g is not None and float(g.abs().max()) > 0 for n, g in grads.items() if n != last_bias)
        (unstopped,) = torch.autograd.grad(energy(x_gen).mean(), [named[last_bias]])
        assert float(unstopped) == pytest.approx(1.0)
        # the stopped energy has no graph to theta of its own
        assert not stopped_energy(energy, x_gen.detach()).requires_grad


def test_eq12_gradient_is_the_sum_of_its_three_parts():
    torch.manual_seed(1)
    energy = MLPEnergy(2, (16, 16), "swish")
    alg, data = make("self_adversarial", energy)
    params = list(energy.parameters())
    x_pos, x0 = data[:128], torch.randn(128, 2)
    contrastive, gen, x_gen = alg.loss_terms(x_pos, x0)
    total = torch.autograd.grad(contrastive + gen, params, retain_graph=True)
    # parts: dE/dtheta at x+ and at the (fixed) generated points, and (dG/dtheta)^T grad_x E at those points
    x_neg = x_gen.detach()
    e_part = torch.autograd.grad(energy(x_pos).mean() - energy(x_neg).mean(), params)
    xg = x_neg.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(energy(xg).mean(), xg)
    g_part = torch.autograd.grad(x_gen, params, grad_outputs=gx, allow_unused=True)
    for t, a, b in zip(total, e_part, g_part, strict=True):
        assert torch.allclose(t, a + (0 if b is None else b), atol=1e-6)


def test_ode_and_fine_euler_generators_agree():
    torch.manual_seed(2)
    energy = MLPEnergy(2, (16, 16), "swish")
    ode, _ = make("noise_free_ode", energy, rtol=1e-6, atol=1e-6)
    euler, _ = make("noise_free_euler", energy, n_steps=400, step_size=T / 400)
    x0 = torch.randn(64, 2)
    assert torch.allclose(ode.sample(x0), euler.sample(x0), atol=2e-3)


def test_hutchinson_training_keeps_an_exact_evaluation():
    torch.manual_seed(4)
    energy = MLPEnergy(2, (16, 16), "swish")
    alg, data = make("ode_flow_ml", energy, trace="hutchinson", rtol=1e-6, atol=1e-6)
    train(alg, data, 2, batch=64)
    test = gaussian().test_set(300)
    exact = ODEFlow(energy, T=T, rtol=1e-6, atol=1e-6).log_prob(test).mean()
    assert alg.extra_metrics(test)["flow_test_loglik"] == pytest.approx(float(exact), abs=1e-5)
    torch.manual_seed(0)
    noisy = alg.flow.log_prob(test, trace="hutchinson").mean()
    assert abs(float(noisy) - float(exact)) > 1e-6  # the training estimator is a different (random) one


def test_steps_log_nfe_and_count_work():
    alg, data = make("noise_free_ode", MLPEnergy(2, (16,), "swish"))
    logs = train(alg, data, 2)
    assert logs["nfe"] >= 6 and alg.work.grad_evals >= 2 * 256 * 6 and "loss" in logs
    alg, data = make("noise_free_euler", MLPEnergy(2, (16,), "swish"))
    logs = train(alg, data, 2)
    assert logs["nfe"] == K and alg.work.grad_evals == 2 * (256 * K + 512)
    alg, data = make("ode_flow_ml", MLPEnergy(2, (16,), "swish"))
    logs = train(alg, data, 1)
    assert logs["loss"] == pytest.approx(-logs["train_loglik"]) and alg.negatives().shape == (256, 2)


def test_suite_resolves_the_noisy_baseline_and_the_paper_settings():
    suite = load_suite("selfadv2d")
    cells = {(c.algorithm, c.target): c for c in resolve_cells(suite, "paper")}
    base = cells[("short_run_normal", "swiss_roll")]
    assert base.base == "short_run" and base.algo.init == "normal" and base.algo.n_steps * base.algo.step_size == 0.2
    ode = cells[("noise_free_ode", "gaussian_grid")]
    assert (ode.train.energy, ode.train.batch_size, ode.train.n_iters, ode.algo.lr) == ("swish_mlp", 800, 3000, 1e-3)
    assert (ode.algo.T, ode.algo.rtol, ode.algo.atol, ode.algo.method) == (0.2, 1e-5, 1e-5, "dopri5")
    assert cells[("self_adversarial_ode", "swiss_roll")].algo.dynamics == "ode"
    assert cells[("self_adversarial", "swiss_roll")].algo.dynamics == "euler"
    assert ode.train.n_eval_samples == 10_000


def test_smoke_sweep_reports_the_002_table_and_draws_fig1(tmp_path, capsys):
    out = tmp_path / "sa"
    argv = ["run", "--suite", "selfadv2d", "--fidelity", "smoke", "--algorithms", "noise_free_ode,short_run_normal",
            "--targets", "gaussian_grid", "--out", str(out), "-j", "1", "--no-report"]
    assert main(argv) == 0
    res = pd.read_csv(out / "results.csv")
    assert (res["status"] == "ok").all()
    ode = res[res["algorithm"] == "noise_free_ode"].set_index("metric")["value"]
    assert {"flow_test_loglik", "test_loglik", "flow_kl", "train_nfe_per_iter"} <= set(ode.index)
    assert "flow_test_loglik" not in set(res[res["algorithm"] == "short_run_normal"]["metric"])
    capsys.readouterr()
    assert main(["table", "--results", str(out)]) == 0
    text = capsys.readouterr().out
    assert "002 §5.1" in text and "-1.95" in text and "-1.47" in text
    assert main(["plot", "--results", str(out)]) == 0
    assert (out / "figures" / "flow_panels.png").stat().st_size > 1000
