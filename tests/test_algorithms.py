"""Every algorithm learns on a tiny case: the mean and scale of a single Gaussian."""

import pytest
import torch

import algorithms
from algorithms.base import ConfigError, Diverged, Problem, build_config
from algorithms.energies import MLPEnergy, QuadraticEnergy
from bench.learning import MU, STD, gaussian_target, learns, train  # the check `bench test-plugin` runs

#: per-algorithm settings for this case. flowMC-EBM's model is exp(-E) rho (000 eq. 6): with a base rho wider
#: than the data the quadratic E can make it N(MU, STD^2) (with rho as narrow as the data E would have to be
#: linear). Flow algorithms: fewer i-SIR particles, latent steps and pre-training steps, for speed.
CASE = {"flowmc_ebm": {"base_scale": 2.0, "n_particles": 8}, "nt_ebm": {"pretrain_steps": 200, "n_steps": 8},
        "nce_ebm": {"pretrain_steps": 200}}
#: CoopFlow's EBM is a short-run generator's energy, not a density estimate of p* (004 §4.2), and a convex
#: quadratic energy cannot widen its flow's samples: it is tested in test_flow_algorithms.py instead.
NOT_A_DENSITY = {"coopflow"}
#: 002's algorithms train the sampling dynamics as a generator: their EBM's own density is not p* (002 §5.1).
#: tests/test_noise_free.py checks their closed-form fixed points (generator = p*, EBM elsewhere) instead.
NOT_A_DENSITY |= {"noise_free_euler", "noise_free_ode", "self_adversarial", "ode_flow_ml"}


@pytest.mark.parametrize("name", sorted(set(algorithms.ALGORITHMS) - NOT_A_DENSITY))
def test_learns_the_mean_and_scale_of_a_gaussian(name):
    energy, alg = train(algorithms.ALGORITHMS[name], **CASE.get(name, {}))
    ok, detail = learns(energy)
    assert ok, detail
    assert alg.negatives().shape[1] == 2 and alg.negatives().shape[0] >= 256


def test_pcd_from_data_with_one_step_is_003_alg4():
    # 003's PCD: walkers = the batch, one ULA step per iteration, started at the data
    energy, _ = train(algorithms.ALGORITHMS["pcd"], n_iters=300, n_persistent=256, init="data", n_steps=1,
                      step_size=0.1)
    assert torch.allclose(energy.mean.detach(), MU, atol=0.1)




@pytest.mark.parametrize(("name", "n_persistent"), [("pcd", 300), ("ula_ebm", 300), ("pcd", 64)])
def test_pcd_writes_its_chains_end_states_back_into_the_persistent_state(name, n_persistent):
    """000 Alg. 3 / 003 Alg. 4: the chains drawn from the persistent state continue from their end states at the
    next iteration and the rest of the state is untouched, for a batch of the bank (300 chains, 64 drawn) and for
    the whole bank moving at once (64 of 64, 003's PCD). A state never written back (CD from the starting
    distribution) learned the tiny Gaussian above as well, so only this test tells them apart."""
    from bench.learning import gaussian_target

    torch.manual_seed(0)
    target = gaussian_target()
    data = target.sample(256, torch.Generator().manual_seed(1))
    cls = algorithms.ALGORITHMS[name]
    alg = cls(Problem(target, data), MLPEnergy(2, (16, 16)),
              build_config(cls.Config, {"n_persistent": n_persistent, "n_steps": 3}, "test"))
    before = alg.bank.states.clone()
    alg.step(data[:64])
    after, ends = alg.bank.states, alg.negatives()
    changed = (after != before).any(-1)
    assert int(changed.sum()) == 64
    assert (after[changed][:, None, :] == ends[None, :, :]).all(-1).any(1).all()


def test_negative_control_a_sign_flip_does_not_learn():
    """The learning test above can fail: the same algorithm ascending instead of descending does not."""

    class Flipped(algorithms.ALGORITHMS["short_run"]):
        def step(self, x_pos):
            x_neg = self.sample(self.start_chains(x_pos))
            self._neg = x_neg
            self.optimizer.zero_grad()
            # positives and negatives swapped: the update points the wrong way
            (self.energy(x_neg).mean() - self.energy(x_pos).mean()).backward()
            self.optimizer.step()
            return {}

    with pytest.raises(AssertionError):
        energy, _ = train(Flipped, n_iters=60)
        assert torch.allclose(energy.mean.detach(), MU, atol=0.1)
        assert abs(float(energy.log_std.detach().exp()) - STD) < 0.075


@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_contrastive_update_is_a_step_on_000_eq3(reg):
    """The shared maximum-likelihood step (000 eq. 3, with 000 App. C.6's regulariser lambda mean(U+^2 + U-^2)) on
    the Gaussian energy U = |x - mu|^2 / (2 s^2), whose gradients are known: dU/dmu = -(x - mu) / s^2 and
    dU/dlog s = -2 U. With SGD at rate 1 the parameters must move by exactly minus the analytic gradient (a
    reweighted negative term or a regulariser missing one side would not)."""
    from algorithms.contrastive import contrastive_update
    from algorithms.work import Work

    g = torch.Generator().manual_seed(0)
    x_pos = torch.randn(7, 2, generator=g, dtype=torch.float64) + 1.0
    x_neg = 2 * torch.randn(5, 2, generator=g, dtype=torch.float64)
    energy = QuadraticEnergy(2, mean=[0.3, -0.2], log_std=0.1).double()
    mu, log_s = energy.mean.detach().clone(), energy.log_std.detach().clone()
    s2 = torch.exp(2 * log_s)

    def parts(x):
        u = ((x - mu) ** 2).sum(-1) / (2 * s2)
        return u, -(x - mu) / s2, -2 * u  # U, dU/dmu (n, 2), dU/dlog s (n,)

    (u_p, gm_p, gs_p), (u_n, gm_n, gs_n) = parts(x_pos), parts(x_neg)
    grad_mu = gm_p.mean(0) - gm_n.mean(0) + reg * (
        (2 * u_p[:, None] * gm_p).mean(0) + (2 * u_n[:, None] * gm_n).mean(0))
    grad_s = gs_p.mean() - gs_n.mean() + reg * ((2 * u_p * gs_p).mean() + (2 * u_n * gs_n).mean())
    loss, stats = contrastive_update(energy, torch.optim.SGD(energy.parameters(), lr=1.0), x_pos, x_neg, reg, Work())
    torch.testing.assert_close(energy.mean.detach(), mu - grad_mu, rtol=0, atol=1e-12)
    torch.testing.assert_close(energy.log_std.detach(), log_s - grad_s, rtol=0, atol=1e-12)
    assert float(loss) == pytest.approx(float(u_p.mean() - u_n.mean()), abs=1e-12)  # L without the regulariser
    assert stats["energy_pos"] == pytest.approx(float(u_p.mean())) and stats["energy_neg"] == pytest.approx(
        float(u_n.mean()))


def test_work_is_counted_by_the_shared_parts():
    _, alg = train(algorithms.ALGORITHMS["ula_ebm"], n_iters=3, n_steps=7)
    # 3 iterations x (256 chains x 7 ULA steps + 256 positives + 256 negatives in the update)
    assert alg.work.grad_evals == 3 * (256 * 7 + 512)
    assert alg.work.energy_evals == 3 * (256 * 7 + 512)


def test_cd_restarts_at_the_data():
    cls = algorithms.ALGORITHMS["cd"]
    target = gaussian_target()
    data = target.sample(512, torch.Generator().manual_seed(0))
    alg = cls(Problem(target, data), QuadraticEnergy(2), build_config(cls.Config, {"restart_every": 2}, "t"))
    batch = data[:64]
    assert torch.equal(alg.start_chains(batch), batch)
    alg.keep(batch + 1)
    assert torch.equal(alg.start_chains(batch), batch + 1)  # kept between restarts
    assert torch.equal(alg.start_chains(batch), batch)  # restarted


def test_divergence_is_raised_not_hidden():
    cls = algorithms.ALGORITHMS["short_run"]
    target = gaussian_target()
    data = target.sample(512, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    cfg = build_config(cls.Config, {"lr": 1e30, "optimizer": "sgd", "n_steps": 2}, "t")
    alg = cls(Problem(target, data), MLPEnergy(2, (16,)), cfg)
    with pytest.raises(Diverged):
        for _ in range(20):
            alg.step(data[:64])


def test_config_validation_names_key_and_choices():
    cls = algorithms.ALGORITHMS["ula_ebm"]
    with pytest.raises(ConfigError, match=r"unknown parameter 'n_stepz'; valid: .*n_steps"):
        build_config(cls.Config, {"n_stepz": 3}, "here")
    with pytest.raises(ConfigError, match="must be one of uniform, normal, data"):
        build_config(cls.Config, {"init": "zeros"}, "here")
    with pytest.raises(ConfigError, match="expects int"):
        build_config(cls.Config, {"n_steps": "ten"}, "here")
    assert build_config(cls.Config, {"lr": 1}, "here").lr == 1.0


def test_the_learning_check_on_models_with_known_moments():
    """bench.learning.learns passes the true model and fails one whose mean or scale is off by more than its
    tolerance (0.1 per coordinate, 0.075); a tilted model exp(-E) r is read by its moments on a grid: here the
    product of two Gaussians, whose mean and scale are known in closed form."""
    import math

    from algorithms.tilt import GaussianReference, tilt
    from bench.learning import MEAN_TOL, STD_TOL, model_moments

    def quadratic(mean, std):
        return QuadraticEnergy(2, mean=mean, log_std=math.log(std))

    assert learns(quadratic(MU, STD))[0]
    assert learns(quadratic(MU + torch.tensor([0.0, 0.9 * MEAN_TOL]), STD + 0.9 * STD_TOL))[0]
    assert not learns(quadratic(MU + torch.tensor([0.0, 1.5 * MEAN_TOL]), STD))[0]  # mean off, scale right
    assert not learns(quadratic(MU + torch.tensor([1.5 * MEAN_TOL, 0.0]), STD))[0]
    assert not learns(quadratic(MU, STD + 1.5 * STD_TOL))[0]  # scale off, mean right
    assert not learns(quadratic(MU, STD - 1.5 * STD_TOL))[0]
    # N(m, 0.6^2) x N(0, 1.2^2): precision 1/0.36 + 1/1.44, mean m (1/0.36) / precision, std precision^-1/2
    m = torch.tensor([1.25, -0.625])
    energy = quadratic(m, 0.6)
    tilt(energy, GaussianReference(1.2))
    precision = 1 / 0.36 + 1 / 1.44
    mean, std = model_moments(energy)
    torch.testing.assert_close(mean, m / 0.36 / precision, atol=1e-3, rtol=0)  # = (1.0, -0.5): MU
    torch.testing.assert_close(std, torch.full((2,), precision**-0.5), atol=1e-3, rtol=0)  # 0.537
    assert learns(energy)[0] and not learns(quadratic(m, 0.6))[0]  # the same E untilted: mean 1.25, off
    # tilted along x alone: x's scale 0.537 is within tolerance, y's 0.6 is not, and one coordinate off is a failure
    energy = quadratic(torch.tensor([1.25, -0.5]), 0.6)
    tilt(energy, lambda x: 0.5 * x[..., 0] ** 2 / 1.44)
    mean, std = model_moments(energy)
    torch.testing.assert_close(mean, MU, atol=1e-3, rtol=0)
    torch.testing.assert_close(std, torch.tensor([precision**-0.5, 0.6]), atol=1e-3, rtol=0)
    assert not learns(energy)[0]
