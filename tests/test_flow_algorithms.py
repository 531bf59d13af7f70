"""The flow-assisted training algorithms (000 flowMC-EBM, 001 NT-EBM / NCE-EBM, 004 CoopFlow): their
initialisation, their contract, and that each learns something on a tiny case, with negative controls."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import math

import pytest
import torch

import algorithms
import datasets
from algorithms.base import Problem, build_config
from algorithms.energies import Energy, MLPEnergy, QuadraticEnergy
from algorithms.flows import RealNVP, data_base_scale, reverse_kl
from algorithms.mcmc import MALA, Adaptation, ChainStats
from algorithms.samplers import h_from_004_delta, ula
from algorithms.tilt import Raw, TiltedModelError
from algorithms.work import Work
from datasets import GaussianMixture

FLOW_ALGORITHMS = ["flowmc_ebm", "nt_ebm", "nce_ebm", "coopflow"]
MU = torch.tensor([1.0, -0.5])
STD = 0.5
BOX = ((-2.0, 3.0), (-3.0, 2.0))


def gaussian():
    return GaussianMixture(means=[MU.tolist()], stds=STD, weights=[1.0], box=BOX)


def two_mode():
    return GaussianMixture(means=[[-1.5, -1.5], [1.5, 1.5]], stds=0.3, weights=[1 / 3, 2 / 3],
                           box=[(-3.0, 3.0), (-3.0, 3.0)])


def make(name, target, energy, n_data=4096, seed=0, **params):
    """The algorithm on ``target``'s samples; ``energy`` may be a factory, called after seeding."""
    torch.manual_seed(seed)
    if not isinstance(energy, torch.nn.Module):
        energy = energy()
    data = target.sample(n_data, torch.Generator().manual_seed(1))
    cls = algorithms.ALGORITHMS[name]
    return cls(Problem(target, data, work=Work()), energy, build_config(cls.Config, params, "test")), data


def train(alg, data, n_iters, batch=256, every=0, probe=None):
    seen = []
    for i in range(n_iters):
        start = (i * batch) % data.shape[0]
        logs = alg.step(data[start:start + batch])
        if every and (i + 1) % every == 0:
            seen.append(probe())
    return logs, seen


def grid_moments(energy, box=BOX, n=200):
    """Mean and standard deviation of the model exp(-energy) on a grid over box."""
    axes = [torch.linspace(lo, hi, n) for lo, hi in box]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = torch.softmax(-energy(pts).double(), 0)
    m = (p[:, None] * pts.double()).sum(0)
    return m, (p[:, None] * (pts.double() - m) ** 2).sum(0).sqrt()


def grid_weight(energy, target, mode=1, n=120):
    axes = [torch.linspace(lo, hi, n) for lo, hi in target.box]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = torch.softmax(-energy(pts).double(), 0)
    return float(p[target.assign(pts) == mode].sum())


def assert_gaussian_moments(m, s, tol_m=0.1, tol_s=0.075):
    assert torch.allclose(m.float(), MU, atol=tol_m), m
    assert torch.allclose(s.float(), torch.full((2,), STD), atol=tol_s), s


# ---------------------------------------------------------------- initialisation and the tilt


def test_flowmc_ebm_starts_exactly_at_the_flow_base():
    torch.manual_seed(0)
    energy = MLPEnergy(2, (16, 16))
    alg, data = make("flowmc_ebm", two_mode(), energy, n_persistent=300)
    sigma = data_base_scale(data)
    assert float(alg.flow.base_scale) == pytest.approx(sigma)
    x = 3 * torch.randn(50, 2)
    assert torch.equal(Raw(energy)(x), torch.zeros(50))  # E_theta0 = 0 (000 §3)
    torch.testing.assert_close(energy(x), 0.5 * (x**2).sum(-1) / sigma**2)  # the tilt: -log rho + const
    assert torch.equal(alg.flow.inverse(x)[0], x)  # T_alpha0 = Id
    # so p_theta0 = rho = lambda_alpha0, and the persistent state starts as samples of the flow
    starts = alg.chain_starts(300)
    assert starts.shape == (300, 2)
    assert starts.std(0).sub(sigma).abs().max() < 0.25 * sigma


def test_flowmc_ebm_writes_its_chains_end_states_back_into_the_persistent_state():
    """000 Alg. 1 step 3: the chains drawn from the persistent bank continue from where they ended, and the rest of
    the bank is untouched (a bank never written back is CD from the flow, and passed every other test)."""
    alg, data = make("flowmc_ebm", two_mode(), MLPEnergy(2, (16, 16)), n_persistent=300, n_particles=8)
    before = alg.bank.states.clone()
    alg.step(data[:64])
    after, ends = alg.bank.states, alg.negatives()  # subsample 1: the negatives are the chains' end states
    changed = (after != before).any(-1)
    assert int(changed.sum()) == 64  # the 64 chains drawn, each moved by its 10 flowMC steps
    same = (after[changed][:, None, :] == ends[None, :, :]).all(-1)
    assert same.any(1).all()  # and each holds its chain's end state


def test_flowmc_ebm_subsampling_keeps_the_states_after_steps_n_over_k_to_n():
    """000 Table 5's "subsampling by k": k evenly spaced states of each chain, the states after steps n/k, 2n/k,
    ..., n (the end state included); the chains continue from their end states."""
    from algorithms.flowmc_ebm import FlowMCEBMConfig, flowmc_negatives

    class Numbered:  # a chain whose state after step j is j, in every coordinate
        def run(self, energy, flow, x0, n_steps, work, keep_chain=False, generators=None):
            assert keep_chain
            steps = torch.arange(1, n_steps + 1, dtype=x0.dtype)
            return x0[:, None, :] * 0 + steps[None, :, None]

    ends, negatives = flowmc_negatives(Numbered(), None, None, torch.zeros(2, 3), FlowMCEBMConfig(n_steps=12,
                                       subsample=4), Work())
    assert torch.equal(ends, torch.full((2, 3), 12.0))
    assert torch.equal(negatives[:, 0], torch.tensor([3.0, 6.0, 9.0, 12.0] * 2))


def test_tilted_models_refuse_exact_quantities_of_the_untilted_energy():
    energy = QuadraticEnergy(2)
    make("nce_ebm", gaussian(), energy, pretrain_steps=0)
    with pytest.raises(TiltedModelError):
        energy.log_z()
    with pytest.raises(TiltedModelError):
        energy.sample_exact(3)


def test_coopflow_settings():
    target = gaussian()
    for setting, (T, delta) in {"t30": (30, 0.03), "t200": (200, 0.01), "pre": (30, 0.03)}.items():
        alg, _ = make("coopflow", target, QuadraticEnergy(2), setting=setting, pretrain_steps=3)
        assert alg.n_steps == T and alg.h == pytest.approx(h_from_004_delta(delta))
        assert alg.warmup == (100 if setting == "pre" else 0)
        assert (alg.work.flow_passes > 0) == (setting == "pre")  # only "pre" pre-trains the flow
    alg, _ = make("coopflow", target, QuadraticEnergy(2), setting="t30", n_steps=7, delta=0.1)
    assert alg.n_steps == 7 and alg.h == pytest.approx(0.005)
    alg, _ = make("coopflow", target, QuadraticEnergy(2), setting="t30", delta=0.1, step_size=5e-4)
    assert alg.h == 5e-4  # 000 gives h directly


def test_coopflow_revision_is_noise_free_langevin_in_004s_convention():
    """004 eq. (3) without noise, x' = x + (delta^2 / 2) grad f with f = -U: on U = |x - mu|^2 / (2 s^2) the
    T-step revision is x_T = mu + (1 - h / s^2)^T (x_0 - mu), h = delta^2 / 2. A sign error (x + h grad U), a
    wrong conversion (h = delta or delta^2) or leftover noise fails it."""
    mu, s, delta, T = torch.tensor([0.3, -0.2]), 0.7, 0.1, 7
    alg, _ = make("coopflow", gaussian(), QuadraticEnergy(2, mean=mu.tolist(), log_std=math.log(s)),
                  setting="t30", delta=delta, n_steps=T)
    x0 = torch.randn(64, 2)
    h = delta**2 / 2
    expected = mu + (1 - h / s**2) ** T * (x0 - mu)
    torch.testing.assert_close(alg.sample(x0), expected, rtol=1e-5, atol=1e-6)
    for wrong_h in (delta, delta**2, -h):
        assert not torch.allclose(mu + (1 - wrong_h / s**2) ** T * (x0 - mu), expected, atol=1e-3)


def test_coopflow_one_iteration_is_algorithm_1_steps_7_and_8():
    """Step 7: the flow takes an Adam (0.9, 0.999) step on -mean log q_alpha(x~) with the revised samples x~
    fixed; step 8: the EBM an Adam (0.5, 0.5) step on mean U(x+) - mean U(x~) (004 eq. 2) with x~ fixed, so on
    the quadratic energy its gradient is the closed form below and nothing of the flow's loss reaches it."""
    import copy

    mu0, s = torch.tensor([0.3, -0.2]), 0.7
    energy = QuadraticEnergy(2, mean=mu0.tolist(), log_std=math.log(s))
    alg, data = make("coopflow", gaussian(), energy, setting="t30", n_steps=5, step_size=0.01, lr=1e-3)
    assert alg.optimizer.param_groups[0]["betas"] == (0.5, 0.5)
    assert alg.flow_opt.param_groups[0]["betas"] == (0.9, 0.999)
    flow_before = copy.deepcopy(alg.flow)
    x_pos = data[:256]
    alg.step(x_pos)
    x_neg = alg.negatives()
    # step 8, closed form at the parameters before the step: d/dmu = (mean x~ - mean x+) / s^2,
    # d/dlog s = -(mean |x+ - mu|^2 - mean |x~ - mu|^2) / s^2
    g_mu = (x_neg.mean(0) - x_pos.mean(0)) / s**2
    g_ls = -((x_pos - mu0).pow(2).sum(-1).mean() - (x_neg - mu0).pow(2).sum(-1).mean()) / s**2
    torch.testing.assert_close(energy.mean.grad, g_mu, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(energy.log_std.grad, g_ls, rtol=1e-4, atol=1e-6)
    # Adam's first step moves each parameter by lr * sign(gradient)
    torch.testing.assert_close(energy.mean.detach(), mu0 - 1e-3 * g_mu.sign(), rtol=0, atol=1e-6)
    # step 7: the flow's gradient is that of its own negative log-likelihood of x~, nothing else
    loss = -flow_before.log_prob(x_neg).mean()
    want = torch.autograd.grad(loss, list(flow_before.parameters()), allow_unused=True)
    for p, w in zip(alg.flow.parameters(), want, strict=True):
        if w is None:
            assert p.grad is None or float(p.grad.abs().max()) == 0.0
        else:
            torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-7)


def test_coopflow_clamps_of_the_authors_image_code():
    """drift_clamp limits each coordinate's move per step; image_clamp keeps pixels in [-1, 1]; both off by
    default (the toy targets' revision is plain noise-free Langevin) and image_clamp is refused off images."""
    far = QuadraticEnergy(2, mean=[50.0, -50.0], log_std=math.log(0.1))
    alg, _ = make("coopflow", gaussian(), far, setting="t30", n_steps=3, step_size=0.01, drift_clamp=0.1)
    x0 = torch.zeros(4, 2)
    torch.testing.assert_close(alg.sample(x0), torch.tensor([[0.3, -0.3]]).expand(4, 2))
    plain, _ = make("coopflow", gaussian(), far, setting="t30", n_steps=3, step_size=0.01)
    # unclamped, h / s^2 = 1: the first step lands on the mean
    torch.testing.assert_close(plain.sample(x0), torch.tensor([[50.0, -50.0]]).expand(4, 2))
    # the image range: the same pull ends on the bounds
    bounded = ula(far, x0, 0.01, 3, Work(), noise=False, bounds=(-1.0, 1.0))
    torch.testing.assert_close(bounded, torch.tensor([[1.0, -1.0]]).expand(4, 2))
    with pytest.raises(Exception, match="image targets only"):
        algorithms.ALGORITHMS["coopflow"].check_target(build_config(
            algorithms.ALGORITHMS["coopflow"].Config, {"image_clamp": True}, "test"), gaussian())


def test_toy2d_coopflow_keeps_000s_langevin_length_and_a_short_warm_up():
    """000 Tables 4-5: 256 noise-free steps of h = 5e-4 (T h = 0.128); App. C.1: the pre-trained flow frozen for
    less than 5 % of training. The quick fidelity may cut T but not T h: at T h = 0.005 (its earlier 10 x 5e-4)
    the EBM's energy ran away (eight_gaussians: max |U| 5e5, test log-likelihood -37,884). Nor may it raise h
    past 4x 000's: at 32 x 4e-3 (8x) the steps overshot the modes and four_mode seed 1 ran away (max |U| 1e9)."""
    from bench.suite import load_suite, resolve_cells

    suite = load_suite("toy2d")
    for fidelity in ("quick", "paper"):
        for cell in resolve_cells(suite, fidelity, ["coopflow"], None, seeds=1):
            a = cell.algo
            assert a.setting == "pre" and a.n_steps * a.step_size == pytest.approx(256 * 5e-4)
            assert a.step_size <= 4 * 5e-4
            assert 0 < a.warmup_iters < 0.05 * cell.train.iterations()
    (paper,) = resolve_cells(suite, "paper", ["coopflow"], ["four_mode"], seeds=1)
    assert (paper.algo.n_steps, paper.algo.step_size, paper.algo.lr) == (256, 5e-4, 1e-3)


def test_coopflow_freezes_the_pretrained_flow_during_warm_up():
    alg, data = make("coopflow", gaussian(), QuadraticEnergy(2), setting="pre", pretrain_steps=20, warmup_iters=3,
                     n_steps=2, step_size=0.01)
    before = [p.detach().clone() for p in alg.flow.parameters()]
    train(alg, data, 3)
    assert all(torch.equal(a, b) for a, b in zip(before, alg.flow.parameters(), strict=True))
    train(alg, data, 1)
    assert not all(torch.equal(a, b) for a, b in zip(before, alg.flow.parameters(), strict=True))


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", FLOW_ALGORITHMS)
def test_contract_shapes_logs_and_work(name):
    params = {"n_steps": 4} if name != "nce_ebm" else {}
    params.update({"pretrain_steps": 2} if name != "flowmc_ebm" else {"n_particles": 4, "n_local": 1})
    if name in ("flowmc_ebm", "nt_ebm"):
        params["n_persistent"] = 200
    alg, data = make(name, gaussian(), lambda: MLPEnergy(2, (16,)), **params)
    w0 = alg.work.as_dict()
    logs, _ = train(alg, data, 2, batch=64)
    assert all(isinstance(v, float) for v in logs.values())
    assert {"loss", "energy_pos", "energy_neg"} <= set(logs)
    if name == "flowmc_ebm":
        assert 0 <= logs["local_accept"] <= 1 and 0 <= logs["global_accept"] <= 1
        # 2 iterations x 64 chains x (2 i-SIR steps of 4 particles + the flow's likelihood step)
        assert alg.work.flow_passes - w0["flow_passes"] == 2 * 64 * (2 * 4 + 1)
        # 2 x 64 x (2 MALA steps + 2 starts + 2 in the update)
        assert alg.work.grad_evals - w0["grad_evals"] == 2 * 64 * 6
    if name == "nt_ebm":
        assert 0 <= logs["local_accept"] <= 1
        # 2 iterations x 64 chains x (4 MALA steps + 1 start) latent gradients, each through the flow,
        # + pushing the chains forward; 2 x 64 x 2 gradients in the update
        assert alg.work.flow_passes - w0["flow_passes"] == 2 * 64 * (5 + 1)
        assert alg.work.grad_evals - w0["grad_evals"] == 2 * 64 * (5 + 2)
    assert alg.negatives().shape[1] == 2
    starts = alg.chain_starts(10)
    assert starts.shape == (10, 2)
    chains = alg.run_chains(starts, 6)
    assert chains.shape == (10, 6, 2) and torch.isfinite(chains).all()
    assert alg.draw_negatives(32).shape[1] == 2
    extra = alg.extra_metrics(gaussian().test_set(100))
    assert math.isfinite(extra["flow_test_loglik"])


# ---------------------------------------------------------------- learning, with negative controls


def test_flowmc_ebm_recovers_the_two_to_one_weight_and_needs_its_global_steps():
    """000 Fig. 1 in miniature: the EBM weight of the heavier mode over training stays near 2/3 with
    flowMC; with the i-SIR global steps removed (MALA only, persistent chains stuck in the modes of rho),
    the same training misweights the modes."""
    target = two_mode()

    def run(**kw):
        torch.manual_seed(0)
        energy = MLPEnergy(2, (32, 32), "swish")
        alg, data = make("flowmc_ebm", target, energy, lr=3e-3, n_persistent=512, **kw)
        _, seen = train(alg, data, 240, batch=128, every=20, probe=lambda: grid_weight(energy, target))
        return seen, alg

    seen, alg = run()
    late = torch.tensor(seen[4:])  # iterations 100..240
    assert abs(late.mean().item() - 2 / 3) < 0.06, seen
    assert (late - 2 / 3).abs().max().item() < 0.15, seen
    assert alg.sampler.glob.rate > 0.5  # the flow follows the EBM: its proposals are accepted
    seen, _ = run(n_global=0)
    assert abs(torch.tensor(seen[4:]).mean().item() - 2 / 3) > 0.15, seen


@pytest.mark.parametrize("sampler", ["mala", "hmc"])
def test_nt_ebm_correction_learns_a_gaussian(sampler):
    """With an untrained backbone (pretrain_steps = 0: q_alpha = the base N(0, 2^2 I)) the correction
    exp(-E) alone has to move the model onto the data."""
    energy = QuadraticEnergy(2)
    extra = {"step_size": 0.2, "n_leapfrog": 3, "n_steps": 4} if sampler == "hmc" else {"step_size": 0.05,
                                                                                            "n_steps": 10}
    alg, data = make("nt_ebm", gaussian(), energy, pretrain_steps=0, base_scale=2.0, lr=0.05, beta1=0.9,
                     n_persistent=512, sampler=sampler, **extra)
    m, s = grid_moments(energy)
    assert (m.float() - MU).abs().max() > 0.4  # starts far away
    logs, _ = train(alg, data, 150)
    assert 0.4 < logs["local_accept"] < 0.95
    assert_gaussian_moments(*grid_moments(energy))


def test_nt_ebm_latent_target_is_eq_9():
    """p(z) prop. to exp(-E(g(z))) q_0(z): with the identity flow, U_z(z) = E(z) + |z|^2 / (2 sigma^2)."""
    energy = QuadraticEnergy(2, mean=[0.3, 0.1], log_std=math.log(0.7))
    alg, _ = make("nt_ebm", gaussian(), energy, pretrain_steps=0, base_scale=2.0)
    z = torch.randn(20, 2)
    u_z = alg.latent(z)
    expect = Raw(energy)(z) + 0.5 * (z**2).sum(-1) / 4.0
    torch.testing.assert_close(u_z - u_z[0], expect - expect[0])


class FlowCancellingGaussian(QuadraticEnergy):
    """E(x) = |x - MU|^2 / (2 STD^2) + log q_alpha(x) for the flow ``ref`` set after the algorithm is built: the
    flow-tilted model exp(-E) q_alpha is then exactly N(MU, STD^2 I), whatever the flow."""

    def __init__(self):
        super().__init__(2, mean=MU.tolist(), log_std=math.log(STD))

    def forward(self, x):
        return super().forward(x) + self.ref.log_prob(x)


class FnEnergy(Energy):
    """An energy given by a function (for known-answer checks of a sampler)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _nt_ebm_through_a_scrambled_flow(energy):
    """NT-EBM (float64) whose fixed flow is far from the identity, so that its log-determinant is not zero."""
    alg, _ = make("nt_ebm", gaussian(), energy, pretrain_steps=0, base_scale=1.5, n_persistent=64,
                  sampler="mala", adapt=False)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in alg.flow.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    alg.flow.double()
    energy.double()
    return alg


def test_nt_ebm_latent_target_is_the_pushforward_of_the_tilted_model():
    """p(z) = p_theta(g(z)) |det dg/dz| (001 eq. 8-9): the latent energy is the model's full energy at g(z)
    minus the flow's log-determinant, up to a constant, for a flow that is not the identity (where the
    log-determinant vanishes and a latent target without it would pass unnoticed)."""
    energy = MLPEnergy(2, (16, 16))
    alg = _nt_ebm_through_a_scrambled_flow(energy)
    z = 1.5 * torch.randn(200, 2, dtype=torch.float64)
    with torch.no_grad():
        x, ladj = alg.flow(z)
        assert ladj.std() > 0.1  # the log-determinant varies: the check below can fail
        pushforward = energy(x) - ladj  # energy(x) = E_theta(x) - log q_alpha(x), the tilted model's energy
        u_z = alg.latent(z)
    torch.testing.assert_close(u_z - u_z[0], pushforward - pushforward[0])
    assert (u_z - energy(x)).std() > 0.1  # without the log-determinant it would not be a constant shift


def test_nt_ebm_latent_mala_samples_the_tilted_model_and_accepts_all_as_h_goes_to_zero():
    """Known answer through a fixed non-identity flow: with E = Gaussian energy + log q_alpha the tilted model is
    N(MU, STD^2 I); exact samples pulled into the latent space, moved by latent MALA and pushed forward stay
    N(MU, STD^2 I) (detailed balance of the latent chain for 001 eq. 9). A latent chain on the model's energy
    without the flow's log-determinant fails the same check. And MALA's acceptance tends to 1 as h -> 0, where
    'small' means h |grad U_z|^2 << 1: with the energy scaled by 1e9 (as in a runaway), h = 1e-8 is not small."""
    torch.manual_seed(0)
    energy = FlowCancellingGaussian()
    alg = _nt_ebm_through_a_scrambled_flow(energy)
    energy.ref = alg.flow
    n = 10_000
    x0 = MU.double() + STD * torch.randn(n, 2, dtype=torch.float64)
    z0 = alg.pull(x0)
    sampler = MALA(0.8, Adaptation(0.75, enabled=False))
    stats = ChainStats()
    x = alg.push(sampler.run(alg.latent, z0, 30, Work(), stats=stats))
    assert 0.5 < stats.rate < 0.95 and (x - x0).abs().mean() > 0.1
    mean, std = x.mean(0), x.std(0)
    tol_m, tol_s = 4.5 * STD / math.sqrt(n), 4.5 * STD * math.sqrt(0.5 / n)
    assert (mean - MU.double()).abs().max() < tol_m and (std - STD).abs().max() < tol_s, (mean, std)

    wrong = FnEnergy(lambda z: energy(alg.flow(z)[0]))  # U(g(z)): the model's energy without the Jacobian
    xw = alg.push(MALA(0.8, Adaptation(0.75, enabled=False)).run(wrong, z0, 30, Work()))
    assert (xw.mean(0) - MU.double()).abs().max() > 3 * tol_m  # fails the same check by a wide margin

    rates = []
    for h in (1.0, 1e-1, 1e-3, 1e-6):
        s = ChainStats()
        MALA(h, Adaptation(0.75, enabled=False)).run(alg.latent, z0[:2000], 5, Work(), stats=s)
        rates.append(s.rate)
    assert rates[0] < rates[1] < rates[2] <= rates[3] and rates[3] > 0.9999, rates

    steep = FnEnergy(lambda z: 1e9 * alg.latent(z))
    g2 = float(steep.value_and_grad(z0[:2000], Work())[1].pow(2).sum(-1).median())
    for h, lo, hi in ((1e-8, 0.0, 0.5), (1e-4 / g2, 0.99, 1.0)):
        s = ChainStats()
        MALA(h, Adaptation(0.75, enabled=False)).run(steep, z0[:2000], 5, Work(), stats=s)
        assert lo <= s.rate <= hi, (h, s.rate)


def test_nce_ebm_correction_learns_a_gaussian_and_needs_the_data():
    def run(flip):
        energy = QuadraticEnergy(2)
        alg, data = make("nce_ebm", gaussian(), energy, pretrain_steps=0, base_scale=2.0, lr=0.05, beta1=0.9)
        for i in range(200):
            start = (i * 256) % 4096
            x_pos = data[start:start + 256]
            if flip:  # control: "positives" drawn from the noise too: nothing to learn
                with torch.no_grad():
                    x_pos = alg.flow.sample(256)[0]
            logs = alg.step(x_pos)
        return energy, logs

    energy, logs = run(False)
    assert_gaussian_moments(*grid_moments(energy))
    assert logs["nce_accuracy"] > 0.7
    energy, _ = run(True)
    with pytest.raises(AssertionError):
        assert_gaussian_moments(*grid_moments(energy))


def test_nce_ebm_loss_is_the_mean_cross_entropy_over_positives_and_negatives():
    """001 eq. 10's logistic regression: the logged loss is the binary cross-entropy averaged over all n+ + n-
    points (log-odds b - E_theta), here with 3 negatives per positive, computed from the parameters before the step
    and the negatives the step drew."""
    import copy

    import torch.nn.functional as F

    alg, data = make("nce_ebm", gaussian(), MLPEnergy(2, (16, 16)), pretrain_steps=0, noise_ratio=3.0)
    raw, bias = copy.deepcopy(Raw(alg.energy)), float(alg.bias.detach())
    x_pos = data[:64]
    logs = alg.step(x_pos)
    x_neg = alg.negatives()
    assert x_neg.shape[0] == 192
    with torch.no_grad():
        lp, ln = bias - raw(x_pos), bias - raw(x_neg)
        want = (F.softplus(-lp).sum() + F.softplus(ln).sum()) / (64 + 192)
    assert logs["loss"] == pytest.approx(float(want), rel=1e-5)


def test_coopflow_generator_learns_a_gaussian_and_its_flow_learns_from_revised_samples():
    """CoopFlow's EBM is a short-run generator's energy (004 §4.2: a moment-matching estimator, not p*), so
    what is checked is the cooperative generator (flow + noise-free Langevin) and its flow, from scratch
    (setting T=30; the flow's learning rate below the EBM's: with both at 1e-2 the flow ran away from the data
    in 4 of 5 seeds). Control: with the flow never updated ("pre" without pre-training and with an endless
    warm-up) the flow stays at its base."""
    common = dict(n_steps=30, step_size=0.005, lr=0.01, flow_lr=0.002)

    def energy():
        return MLPEnergy(2, (32, 32), "swish")

    alg, data = make("coopflow", gaussian(), energy, setting="t30", **common)
    assert alg.chain_starts(4000).mean(0).abs().max() < 0.05  # the flow starts at N(0, sigma^2 I)
    train(alg, data, 300)
    neg = alg.draw_negatives(4000)
    assert_gaussian_moments(neg.mean(0), neg.std(0), tol_m=0.25, tol_s=0.15)
    assert torch.allclose(alg.chain_starts(4000).mean(0), MU, atol=0.25)
    alg, data = make("coopflow", gaussian(), energy, setting="pre", pretrain_steps=0, warmup_iters=10**9, **common)
    train(alg, data, 100)
    assert alg.chain_starts(4000).mean(0).abs().max() < 0.05


# ---------------------------------------------------------------- NT-EBM's flow pre-training


def test_nt_ebm_pretrains_its_flow_by_reverse_kl_or_max_likelihood_and_says_which():
    """000's pre-training (reverse KL to p*'s exact density) moves the flow onto the target; the result names
    the objective. Maximum likelihood (001 §3.3) reports its own metric instead."""
    target = two_mode()
    torch.manual_seed(0)
    identity = RealNVP(2, base_scale=1.0)
    with torch.no_grad():
        kl_identity = float(reverse_kl(identity, target.log_prob, 20_000))
    alg, _ = make("nt_ebm", target, lambda: MLPEnergy(2, (16,)), pretrain="reverse_kl", pretrain_steps=200,
                  base_scale=1.0, n_persistent=64)
    with torch.no_grad():
        kl = float(reverse_kl(alg.flow, target.log_prob, 20_000))
    assert kl < 0.2 * kl_identity
    assert alg.work.flow_passes >= 200 * 256
    extra = alg.extra_metrics(target.test_set(100))
    assert "flow_pretrain_reverse_kl" in extra and "flow_pretrain_loglik" not in extra
    assert extra["flow_pretrain_reverse_kl"] < 0.2 * kl_identity
    ml, _ = make("nt_ebm", target, lambda: MLPEnergy(2, (16,)), pretrain_steps=5, n_persistent=64)
    assert ml.config.pretrain == "max_likelihood"
    assert set(ml.extra_metrics(target.test_set(100))) >= {"flow_pretrain_loglik"}


def test_reverse_kl_pretraining_on_a_target_without_density_is_refused_before_training(tmp_path, monkeypatch,
                                                                                        capsys):
    from bench import suite as suite_mod
    from bench.cli import main
    monkeypatch.setattr(suite_mod, "SUITES_DIR", tmp_path)
    (tmp_path / "s.toml").write_text(
        'targets = ["two_mode", "swiss_roll"]\nalgorithms = ["nt_ebm"]\n[fidelity.quick.defaults]\nn_iters = 3\n'
        '[fidelity.quick.algorithms.nt_ebm]\npretrain = "reverse_kl"\n')
    out = tmp_path / "out"
    assert main(["run", "--suite", "s", "--out", str(out), "-j", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: ") and "nt_ebm/swiss_roll" in err[0]
    assert "needs the target's exact density" in err[0]
    assert not (out / "results.csv").exists()
    with pytest.raises(algorithms.ConfigError, match="exact density"):
        make("nt_ebm", datasets.get_target("swiss_roll"), lambda: MLPEnergy(2, (16,)), pretrain="reverse_kl")
