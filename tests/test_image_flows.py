"""The convolutional multiscale flow (algorithms/image_flows.py): exact identity at initialisation,
invertibility, log-determinant against the brute-force Jacobian, the flow factory by the target's shape, and
the papers' image energies (algorithms/conv_energies.py) with their parameter counts."""

import pytest
import torch
from tiny_images import Digits8, assert_learns

from algorithms.flows import FlowConfig, RealNVP, flow_for
from algorithms.image_flows import ImageFlow, max_levels, n_parameters, squeeze, unsqueeze
from algorithms.work import Work


def _randomise(flow, scale=0.1):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_squeeze_is_a_permutation():
    x = torch.arange(2 * 3 * 4 * 8, dtype=torch.float64).reshape(2, 3, 4, 8)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 4)
    assert torch.equal(unsqueeze(y), x)
    assert torch.equal(y.flatten().sort().values, x.flatten())
    assert max_levels((3, 32, 32)) == 5 and max_levels((1, 28, 28)) == 2 and max_levels((1, 7, 7)) == 0


@pytest.mark.parametrize("shape,levels", [((1, 8, 8), 2), ((3, 4, 4), 2), ((1, 8, 4), 1)])
@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_identity_at_init(shape, levels, coupling):
    f = ImageFlow(shape, levels, 3, 8, coupling).double()
    x = torch.randn(5, f.dim, dtype=torch.float64)
    z, ladj = f.inverse(x)
    assert torch.equal(z, x) and torch.equal(ladj, torch.zeros(5, dtype=torch.float64))
    y, ladj2 = f.forward(x)
    assert torch.equal(y, x) and torch.equal(ladj2, torch.zeros(5, dtype=torch.float64))
    # the gradient at the identity is not zero: learning starts at once
    f.log_prob(x).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in f.parameters())


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_invertible_and_logdet_matches_brute_force_jacobian(coupling):
    f = ImageFlow((2, 4, 4), 2, 2, 6, coupling).double()
    _randomise(f)
    x = torch.randn(3, f.dim, dtype=torch.float64)
    z, ladj = f.inverse(x)
    xr, ladj_fwd = f.forward(z)
    assert torch.allclose(xr, x, atol=1e-10)
    assert torch.allclose(ladj + ladj_fwd, torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert not torch.allclose(z, x)  # no longer the identity
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: f.inverse(v[None])[0][0], x[i])
        assert torch.allclose(torch.linalg.slogdet(jac)[1], ladj[i], atol=1e-8)
        jac_f = torch.autograd.functional.jacobian(lambda v: f.forward(v[None])[0][0], z[i])
        assert torch.allclose(torch.linalg.slogdet(jac_f)[1], ladj_fwd[i], atol=1e-8)


def test_log_prob_normalised_and_sample_consistent():
    f = ImageFlow((1, 4, 4), 2, 2, 4, base_scale=0.7).double()
    _randomise(f)
    x, lp = f.sample(6)
    assert x.shape == (6, 16)
    assert torch.allclose(f.log_prob(x), lp, atol=1e-10)
    # at the identity the density is the base's, N(0, 0.7^2 I)
    g = ImageFlow((1, 4, 4), 2, 2, 4, base_scale=0.7).double()
    ref = torch.distributions.Normal(0.0, 0.7).log_prob(x).sum(-1)
    assert torch.allclose(g.log_prob(x), ref, atol=1e-10)


def test_work_counts_flow_passes():
    f = ImageFlow((1, 4, 4), 1, 1, 4)
    w = Work()
    f.log_prob(torch.randn(7, 16), w)
    f.sample(3, w)
    assert w.flow_passes == 10


def test_flow_factory_by_shape():
    cfg = FlowConfig(base_scale=1.0, flow_layers=2, flow_hidden=8, flow_levels=5)
    data = torch.randn(10, 64)
    assert isinstance(flow_for(cfg, data), RealNVP)
    f = flow_for(cfg, data, (1, 8, 8))
    assert isinstance(f, ImageFlow) and f.n_levels == 3  # capped at what 8x8 allows
    with pytest.raises(ValueError, match="levels"):
        ImageFlow((1, 7, 7), 1)


def test_paper_flow_sizes():
    """001 A.3 for CIFAR-10: Glow with 3 levels, depth 16, width 512, additive couplings."""
    assert n_parameters(ImageFlow((3, 32, 32), 3, 16, 512, "additive")) == 18_926_688


# --------------------------------------------------------------------------------------- the papers' energies
PAPER_COUNTS = {  # (3, 32, 32) CIFAR-10 inputs at the papers' widths
    "convnet_lipswish": 429_249,  # 001 A.3 Table 4, n_f = 32
    "resnet_ebm": 25_703_268,  # 004 A.1 Table 2, ch = 128
    "shortrun_convnet": 11_031_809,  # 003 §4.3: Nijkamp et al. 2019's ConvNet, n_f = 128
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_energy_sizes_and_zero_init(name):
    from algorithms.energies import make_energy
    from algorithms.tilt import zero_last_layer

    e = make_energy(name, 3 * 32 * 32, (3, 32, 32))
    assert n_parameters(e) == PAPER_COUNTS[name]
    small = make_energy(name + "_small", 64, (1, 8, 8))  # the quick fidelity's, on 8x8 digits
    x = torch.rand(4, 64) * 2 - 1
    assert small(x).shape == (4,)
    assert zero_last_layer(small) and torch.equal(small(x), torch.zeros(4))
    # without a shape a square image is read off the dimension
    assert make_energy(name + "_small", 3 * 16 * 16).shape == (3, 16, 16)


# ---------------------------------------------------------------- each flow algorithm learns on 8x8 digits
FLOW = dict(flow_layers=2, flow_hidden=16, flow_levels=2)
CASES = {
    "nt_ebm": dict(pretrain_steps=30, pretrain_batch=64, n_steps=5, n_persistent=128, lr=1e-2, **FLOW),
    "nce_ebm": dict(pretrain_steps=30, pretrain_batch=64, lr=1e-2, **FLOW),
    "coopflow": dict(setting="t30", n_steps=5, lr=1e-3, **FLOW),
    "flowmc_ebm": dict(n_steps=5, n_local=4, n_particles=8, n_persistent=128, lr=1e-3, energy_reg=1e-4, **FLOW),
    "noise_free_euler": dict(n_steps=5, step_size=0.1, lr=1e-3),
    "self_adversarial": dict(n_steps=5, step_size=0.1, lr=1e-3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_flow_algorithms_learn_on_digits(name):
    """25 iterations on 8x8 digits: the model energy of held-out digits drops below that of the algorithm's
    own reference images (flow samples for the flow-backbone models, uniform noise otherwise), by more than
    it did at initialisation. NT-EBM and NCE-EBM are measured on the raw correction E_theta against the
    pre-trained flow's samples (the tilt by q_alpha is fixed)."""
    import algorithms
    from algorithms.base import Problem, build_config
    from algorithms.energies import make_energy
    from algorithms.tilt import Raw

    torch.manual_seed(0)
    t = Digits8()
    data, test = t.x[:1200], t.x[1500:1700]
    e = make_energy("convnet_lipswish_small", 64, t.shape)
    cls = algorithms.ALGORITHMS[name]
    alg = cls(Problem(t, data), e, build_config(cls.Config, CASES[name], name))
    backbone = name in ("nt_ebm", "nce_ebm")
    score = Raw(e) if backbone else e
    ref = alg.flow.sample(200)[0].detach() if backbone else torch.rand(200, 64) * 2 - 1
    if name in ("nt_ebm", "nce_ebm", "coopflow", "flowmc_ebm"):
        assert alg.flow.shape == (1, 8, 8)
    assert_learns(alg, score, data, test, ref)
    assert alg.negatives().shape[1] == 64
