"""The 003 teacher (two-mode GMM) and the parametric student against their closed forms."""

import bench  # noqa: F401

# isort: split
import math

import pytest
import torch

import datasets
from algorithms.energies import GMMStudent
from algorithms.work import Work
from metrics.modes import sample_mode_weights


def test_teacher_003_settings():
    t = datasets.get_target("gmm50d")
    assert t.dim == 50
    assert t.a_star[0] == -10 and t.b_star[0] == 6 and t.a_star[1:].abs().sum() == 0
    assert t.z_star == pytest.approx(-math.log(3))
    assert t.mode_weights.tolist() == pytest.approx([0.25, 0.75])
    # eq. (14): rho* = (e^{-|x-a|^2/2} + e^{-|x-b|^2/2 - z*}) / ((2 pi)^{d/2} (1 + e^{-z*}))
    x = t.sample(7, torch.Generator().manual_seed(0)).double()
    la = -0.5 * ((x - t.a_star) ** 2).sum(-1)
    lb = -0.5 * ((x - t.b_star) ** 2).sum(-1) - t.z_star
    closed = torch.logaddexp(la, lb) - 25 * math.log(2 * math.pi) - math.log(1 + math.exp(-t.z_star))
    torch.testing.assert_close(t.log_prob(x), closed)


def test_teacher_samples_have_the_true_weights():
    t = datasets.get_target("gmm50d")
    x = t.sample(40_000, torch.Generator().manual_seed(1))
    w = sample_mode_weights(t.assign(x), 2)
    assert abs(w[0] - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 40_000)


def test_gmm1d_density_integrates_to_one():
    t = datasets.get_target("gmm1d")
    x = torch.linspace(-15, 15, 30001, dtype=torch.float64)[:, None]
    assert float(torch.trapezoid(t.log_prob(x).exp(), x[:, 0])) == pytest.approx(1.0, abs=1e-8)


def student(dim, a1, b1, z, seed=0):
    torch.manual_seed(seed)
    s = GMMStudent(dim).double()
    with torch.no_grad():
        s.a.zero_()
        s.b.zero_()
        s.z.fill_(z)
        s.a[0] = a1
        s.b[0] = b1
    return s


def test_student_log_z_is_exact_in_1d_and_2d():
    s = student(1, -2.0, 3.0, 0.7)
    x = torch.linspace(-15, 15, 30001, dtype=torch.float64)[:, None]
    z_num = torch.trapezoid(torch.exp(-s(x)).detach(), x[:, 0])
    assert float(s.log_z().detach()) == pytest.approx(float(z_num.log()), abs=1e-8)
    s2 = student(2, -1.0, 2.0, -0.4)
    g = torch.linspace(-10, 10, 1001, dtype=torch.float64)
    xx = torch.cartesian_prod(g, g)
    z2 = torch.exp(-s2(xx)).detach().sum() * (g[1] - g[0]) ** 2
    assert float(s2.log_z().detach()) == pytest.approx(float(z2.log()), abs=1e-6)


def test_student_equals_teacher_at_teacher_parameters():
    t = datasets.get_target("gmm50d")
    s = student(50, -10.0, 6.0, t.z_star)
    x = t.sample(100, torch.Generator().manual_seed(2)).double()
    torch.testing.assert_close((-s(x) - s.log_z()).detach(), t.log_prob(x))
    assert s.p == pytest.approx(0.25)


def test_student_samples_itself_exactly():
    s = student(2, -4.0, 4.0, math.log(3))  # weight 1/(1+e^-z) = 0.75 at a
    torch.manual_seed(3)
    x = s.sample_exact(40_000)
    at_a = (x[:, 0] < 0).double().mean()
    assert abs(float(at_a) - 0.75) < 5 * math.sqrt(0.75 * 0.25 / 40_000)
    near_a = x[x[:, 0] < 0]
    assert near_a.mean(0).tolist() == pytest.approx([-4.0, 0.0], abs=0.03)
    assert near_a.var(0).tolist() == pytest.approx([1.0, 1.0], abs=0.05)


def test_student_initialisation_003():
    torch.manual_seed(0)
    s = GMMStudent(50)
    a, b, z = float(s.a[0].detach()), float(s.b[0].detach()), float(s.z.detach())
    assert a == pytest.approx(-0.1) and b == pytest.approx(0.1) and z == 0.0
    assert 0.003 < float(s.a[1:].detach().std()) < 0.02
    u, g = s.value_and_grad(torch.zeros(3, 50), Work())
    assert u.shape == (3,) and g.shape == (3, 50)


class _NoEstimate:
    def log_z_estimate(self):
        return None


def _measure(energy):
    from bench.evaluation import Probe
    from bench.suite import TrainConfig
    cfg = TrainConfig(energy="gmm_student", dtype="float64", n_eval_samples=2000, n_model_samples=20_000)
    torch.manual_seed(4)
    out, _ = Probe(datasets.get_target("gmm50d"), energy, cfg, torch.device("cpu")).measure(_NoEstimate(), 0)
    return out


def test_student_p_k_is_sigma_z_and_the_sample_share_is_a_separate_metric():
    """003's p_k = 1 / (1 + e^-z) (Fig. 1, 6 left). At initialisation z = 0, so p_k = 0.5 exactly, while the
    share of exact samples nearest the teacher's -10 mode is P(N(0, 1) < -2) ~ 0.023; at the teacher's
    parameters both are 0.25 and the KL is zero."""
    torch.manual_seed(0)
    init = _measure(GMMStudent(50).double())
    assert init["ebm_weight[0]"] == 0.5 and init["ebm_weight[1]"] == 0.5
    assert init["ebm_sample_share[0]"] == pytest.approx(0.0228, abs=0.004)
    t = datasets.get_target("gmm50d")
    teacher = _measure(student(50, -10.0, 6.0, t.z_star))
    assert teacher["ebm_weight[0]"] == pytest.approx(0.25, abs=1e-12)
    assert teacher["ebm_weight_mse"] == pytest.approx(0.0, abs=1e-24)
    assert teacher["ebm_sample_share[0]"] == pytest.approx(0.25, abs=5 * math.sqrt(0.25 * 0.75 / 20_000))
    assert teacher["kl"] == pytest.approx(0.0, abs=1e-10)
    assert teacher["param_error[z]"] == pytest.approx(0.0, abs=1e-12)


def _paper_cell(name):
    from bench.suite import load_suite, resolve_cells
    return resolve_cells(load_suite("gmm50d"), "paper", [name], ["gmm50d"], seeds=1)[0]


def test_gmm50d_variants_named_after_a_figure_carry_its_settings_at_paper_fidelity():
    """A variant named [figN] claims 003's settings for that figure at paper fidelity; B.1's gammas are read
    as the public code steps (gamma h, h = 0.1), the reading under which the KL estimate can overlap the exact
    KL as in Fig. 6."""
    j = _paper_cell("jarzynski")
    assert (j.algo.lr, j.algo.param_lr, j.algo.n_walkers, j.train.n_data, j.train.n_iters) == (
        pytest.approx(0.025 * 0.1), {"z": pytest.approx(0.125 * 0.1)}, 10_000, 10_000, 8000)
    f1 = _paper_cell("jarzynski[fig1]")  # Alg. 2, N = 1e5, N' = 1e4, n = 1e5, gamma 0.2 / 1, 1/c = 1.05
    assert (f1.algo.n_walkers, f1.algo.walker_batch, f1.train.n_data, f1.train.batch_size) == (
        100_000, 10_000, 100_000, 100_000)
    assert (f1.algo.lr, f1.algo.param_lr["z"], f1.algo.step_size) == (
        pytest.approx(0.2 * 0.1), pytest.approx(1.0 * 0.1), 0.1)
    assert 1 + f1.algo.resample_c == pytest.approx(1.05) and f1.algo.resampling == "systematic"
    cd1 = _paper_cell("cd[fig1]")  # the rates x 10, restarts every 4 ULA steps
    assert (cd1.algo.lr, cd1.algo.param_lr["z"], cd1.algo.restart_every) == (
        pytest.approx(2 * 0.1), pytest.approx(10 * 0.1), 4)
    f8 = _paper_cell("pcd[fig8]")  # gamma_z = 5, gamma_ab = 0.2 gamma_z, h = 0.2, K = 1e4, N = 1e4
    assert (f8.algo.lr, f8.algo.param_lr["z"], f8.algo.step_size) == (
        pytest.approx(1.0 * 0.2), pytest.approx(5.0 * 0.2), 0.2)
    assert (f8.train.n_iters, f8.algo.n_persistent, f8.algo.init) == (10_000, 10_000, "data")
    lag = _paper_cell("jarzynski[stratified-lag=100]")
    assert (lag.algo.resample_every, lag.algo.resampling, lag.algo.n_walkers, lag.train.n_iters) == (
        100, "stratified", 100_000, 480_000)


def _student_at_random(dim, seed):
    torch.manual_seed(seed)
    s = GMMStudent(dim).double()
    with torch.no_grad():
        s.a.copy_(torch.randn(dim, dtype=torch.float64) * 3)
        s.b.copy_(torch.randn(dim, dtype=torch.float64) * 3)
        s.z.fill_(-0.7)
    return s


@pytest.mark.parametrize("dim", [1, 2, 50])
def test_student_closed_form_value_and_gradients_equal_autograd(dim):
    """The student's closed-form U and its derivatives in x, a, b and z (used by forward/backward and
    value_and_grad) against autograd through the plain formula of 003 eq. (15), float64."""
    s = _student_at_random(dim, 5)
    x = (torch.randn(300, dim, dtype=torch.float64) * 4).requires_grad_(True)
    gu = torch.rand(300, dtype=torch.float64)  # an uneven upstream gradient, as a weighted loss gives
    u_ref = s.forward_autograd(x)
    ref = torch.autograd.grad(u_ref, [x, s.a, s.b, s.z], gu)
    u = s(x)
    got = torch.autograd.grad(u, [x, s.a, s.b, s.z], gu)
    torch.testing.assert_close(u, u_ref, rtol=1e-13, atol=1e-12)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    w = Work()
    u2, gx = s.value_and_grad(x, w)
    (gx_ref,) = torch.autograd.grad(s.forward_autograd(x).sum(), x)
    torch.testing.assert_close(u2, u_ref.detach(), rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    assert (w.energy_evals, w.grad_evals) == (300, 300)
    # only some inputs needing a gradient (the parameter loss: x does not)
    (gz,) = torch.autograd.grad(s(x.detach()).sum(), [s.z])
    (gz_ref,) = torch.autograd.grad(s.forward_autograd(x.detach()).sum(), [s.z])
    torch.testing.assert_close(gz, gz_ref, rtol=1e-12, atol=1e-12)


def test_student_closed_form_passes_gradcheck_and_second_derivatives():
    """First derivatives by finite differences, and second derivatives (create_graph=True, which goes through
    the autograd graph of the same formula) by gradgradcheck."""
    from algorithms.energies import _StudentEnergy
    s = _student_at_random(3, 6)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    args = (x, s.a.detach().clone().requires_grad_(True), s.b.detach().clone().requires_grad_(True),
            s.z.detach().clone().requires_grad_(True))
    assert torch.autograd.gradcheck(_StudentEnergy.apply, args)
    assert torch.autograd.gradgradcheck(_StudentEnergy.apply, args)
    (g,) = torch.autograd.grad(s(x).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g[:, 0].sum(), x)
    (g_ref,) = torch.autograd.grad(s.forward_autograd(x).sum(), x, create_graph=True)
    (h_ref,) = torch.autograd.grad(g_ref[:, 0].sum(), x)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("a1, b1, z", [(-0.1, 0.1, 0.0), (-10.0, 6.0, -math.log(3)), (-3.0, 2.0, 1.3)])
def test_region_masses_of_the_student_equal_the_share_of_its_exact_samples(a1, b1, z):
    """The closed-form mass of the student in each teacher region (used for ebm_sample_share) against the share
    of 200k exact samples, also with the student's means off the teacher's axis."""
    t = datasets.get_target("gmm50d")
    s = student(50, a1, b1, z)
    with torch.no_grad():
        s.a[1:4] += torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
        s.b[0] += 0.3
    masses = t.region_masses(*s.unit_components())
    torch.manual_seed(7)
    share = sample_mode_weights(t.assign(s.sample_exact(200_000)), 2)
    assert float(masses.sum()) == pytest.approx(1.0, abs=1e-15)
    assert float(masses[0]) == pytest.approx(float(share[0]), abs=5 * math.sqrt(0.25 / 200_000) + 1e-6)


def test_tilted_student_value_and_grad_sees_the_tilt():
    from algorithms.tilt import tilt
    s = _student_at_random(4, 8)
    tilt(s, lambda x: 0.5 * x.pow(2).sum(-1) / 4.0)
    x = torch.randn(20, 4, dtype=torch.float64, requires_grad=True)
    u_ref = s.forward_autograd(x) + 0.5 * x.pow(2).sum(-1) / 4.0
    (g_ref,) = torch.autograd.grad(u_ref.sum(), x)
    u, g = s.value_and_grad(x, Work())
    torch.testing.assert_close(u, u_ref.detach(), rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
