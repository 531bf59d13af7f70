"""Ground truth of the targets: normalisation, exact samples vs log_prob, mode weights, analytic values."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import math

import numpy as np
import pytest
import torch
from scipy import stats

import datasets
from datasets import GaussianMixture, NoGroundTruth
from metrics.density import grid, grid_log_normalizer
from metrics.modes import grid_mode_weights

DENSITY_TARGETS = ["two_mode", "four_mode", "eight_gaussians", "rings", "gaussian_grid"]
SAMPLE_ONLY_TARGETS = ["swiss_roll", "spiral"]
HIGH_D_TARGETS = ["gmm50d", "gmm1d"] + [c.name for c in datasets.highdim.HD_TARGETS]  # test_gmm.py, test_highdim.py
IMAGE_TARGETS = [c.name for c in datasets.images.IMAGE_TARGETS]  # test_images.py, test_cifar10_suite.py


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_has_expected_targets_and_density_flags():
    assert set(datasets.TARGETS) == (set(DENSITY_TARGETS) | set(SAMPLE_ONLY_TARGETS) | set(HIGH_D_TARGETS)
                                     | set(IMAGE_TARGETS))
    for name in DENSITY_TARGETS + HIGH_D_TARGETS:
        assert datasets.get_target(name).has_density is True, name
    for name in SAMPLE_ONLY_TARGETS + IMAGE_TARGETS:
        assert datasets.get_target(name).has_density is False, name


@pytest.mark.parametrize("name", DENSITY_TARGETS)
def test_log_prob_integrates_to_one_over_box(name):
    t = datasets.get_target(name)
    nodes, area = grid(t.box, 800, dtype=torch.float64)
    log_z = grid_log_normalizer(t.log_prob(nodes), area)
    assert abs(log_z) < 1e-3, f"{name}: log Z = {log_z}"


def _cell_probabilities(target, log_prob_fn, bins: int, sub: int) -> np.ndarray:
    """Mass of each of bins x bins cells of target.box, shape (bins, bins) indexed [ix, iy], by a midpoint
    rule with sub x sub nodes per cell."""
    nodes, area = grid(target.box, bins * sub, dtype=torch.float64)
    p = (log_prob_fn(nodes).exp() * area).numpy()
    n = bins * sub
    k = np.arange(n * n)
    ix, iy = (k % n) // sub, (k // n) // sub  # grid() orders nodes x fastest
    out = np.zeros((bins, bins))
    np.add.at(out, (ix, iy), p)
    return out


def _chisq_pvalue(target, samples: torch.Tensor, log_prob_fn, bins: int = 16, sub: int = 20) -> float:
    """Chi-square goodness of fit of a bins x bins histogram of samples over target.box against the cell
    masses of log_prob_fn. Cells expected to hold < 5 samples, and the outside of the box, are merged
    into one extra cell (dropped if that is still < 5) and the expectation is renormalised."""
    x = samples.double().numpy()
    (x0, x1), (y0, y1) = target.box
    edges = [np.linspace(x0, x1, bins + 1), np.linspace(y0, y1, bins + 1)]
    obs, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=edges)
    n = x.shape[0]
    probs = _cell_probabilities(target, log_prob_fn, bins, sub)
    obs, probs = obs.reshape(-1), probs.reshape(-1)
    exp = probs * n
    keep = exp >= 5
    f_obs = list(obs[keep])
    f_exp = list(exp[keep])
    rest_obs = n - obs[keep].sum()  # small cells and everything outside the box
    rest_exp = n - exp[keep].sum()
    if rest_exp >= 5:
        f_obs.append(rest_obs)
        f_exp.append(rest_exp)
    f_obs, f_exp = np.asarray(f_obs), np.asarray(f_exp)
    f_exp = f_exp * f_obs.sum() / f_exp.sum()
    assert len(f_obs) > 10  # a coarse but real histogram
    return float(stats.chisquare(f_obs, f_exp).pvalue)


@pytest.mark.parametrize("name", DENSITY_TARGETS)
def test_exact_samples_fit_log_prob_chisquare(name):
    t = datasets.get_target(name)
    x = t.sample(20_000, _gen(1234))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32
    p = _chisq_pvalue(t, x, t.log_prob)
    assert p > 1e-3, f"{name}: chi-square p = {p}"


@pytest.mark.parametrize("name", ["two_mode", "four_mode", "eight_gaussians", "gaussian_grid"])
@pytest.mark.parametrize("wrong", ["variance_as_std", "std_x1.5"])
def test_chisquare_check_rejects_wrong_samples(name, wrong):
    """Negative control: the goodness-of-fit check above can fail."""
    t = datasets.get_target(name)
    stds = t.stds**2 if wrong == "variance_as_std" else 1.5 * t.stds
    bad = GaussianMixture(t.means, stds, t.mode_weights, box=t.box)
    x = bad.sample(20_000, _gen(1234))
    p = _chisq_pvalue(t, x, t.log_prob)
    assert p < 1e-6, f"{name}/{wrong}: chi-square p = {p}"


@pytest.mark.parametrize("name", ["two_mode", "four_mode"])
def test_chisquare_check_rejects_wrong_weights(name):
    t = datasets.get_target(name)
    bad = GaussianMixture(t.means, t.stds, t.mode_weights.flip(0), box=t.box)
    assert _chisq_pvalue(t, bad.sample(20_000, _gen(1234)), t.log_prob) < 1e-6


def test_chisquare_check_rejects_wrong_ring_width():
    t = datasets.get_target("rings")
    bad = datasets.get_target("rings")
    bad.std = 1.5 * t.std  # instance attribute: does not touch the class
    assert datasets.get_target("rings").std == t.std
    x = bad.sample(20_000, _gen(1234))
    assert _chisq_pvalue(t, x, t.log_prob) < 1e-6


@pytest.mark.parametrize("name", DENSITY_TARGETS)
def test_assigned_mode_frequencies_match_mode_weights(name):
    t = datasets.get_target(name)
    n = 20_000
    x = t.sample(n, _gen(99))
    labels = t.assign(x)
    assert labels.shape == (n,)
    assert int(labels.min()) >= 0 and int(labels.max()) < t.n_modes
    freq = torch.bincount(labels, minlength=t.n_modes).double().numpy() / n
    w = t.mode_weights.numpy()
    assert w.shape == (t.n_modes,)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    se = np.sqrt(w * (1 - w) / n)
    assert np.all(np.abs(freq - w) < 5 * se), (freq, w)


@pytest.mark.parametrize("name", DENSITY_TARGETS)
def test_grid_mass_of_each_mode_region_is_its_weight(name):
    t = datasets.get_target(name)
    nodes, _ = grid(t.box, 600, dtype=torch.float64)
    w = grid_mode_weights(t.log_prob(nodes), t.assign(nodes), t.n_modes)
    np.testing.assert_allclose(w, t.mode_weights.numpy(), atol=1e-4)


def test_mode_weights_are_a_copy():
    t = datasets.get_target("four_mode")
    w = t.mode_weights
    w[0] = 0.9
    assert t.mode_weights[0].item() == pytest.approx(0.1)


def test_two_mode_log_prob_at_the_means_closed_form():
    t = datasets.get_target("two_mode")

    def log_normal2(x, mu, var):  # isotropic 2-D Gaussian with covariance var * I
        sq = sum((a - b) ** 2 for a, b in zip(x, mu, strict=True))
        return -sq / (2 * var) - math.log(2 * math.pi * var)

    m_lo, m_hi = (-1.5, -1.5), (1.5, 1.5)
    for x in (m_lo, m_hi, (0.0, 0.0), (1.0, 2.0)):
        expected = np.logaddexp(
            math.log(1 / 3) + log_normal2(x, m_lo, 0.05), math.log(2 / 3) + log_normal2(x, m_hi, 0.1)
        )
        got = t.log_prob(torch.tensor([x], dtype=torch.float64)).item()
        assert got == pytest.approx(expected, abs=1e-10), x
    # at the heavy mean the other component is negligible: log(2/3) - log(2 pi 0.1)
    at_hi = t.log_prob(torch.tensor(m_hi, dtype=torch.float64)).item()
    assert at_hi == pytest.approx(math.log(2 / 3) - math.log(2 * math.pi * 0.1), abs=1e-12)
    # float32 input works and gives shape (...,)
    assert t.log_prob(torch.zeros(3, 2)).shape == (3,)


def test_four_mode_means_variance_and_weights():
    t = datasets.get_target("four_mode")
    np.testing.assert_array_equal(t.means[:, 0].numpy(), [-3.0, -1.0, 1.0, 3.0])
    np.testing.assert_array_equal(t.means[:, 1].numpy(), [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(t.stds.numpy() ** 2, 0.05, rtol=1e-12)
    np.testing.assert_allclose(t.mode_weights.numpy(), [0.1, 0.2, 0.3, 0.4], rtol=1e-12)
    # Voronoi regions: cut at x = -2, 0, 2
    x = torch.tensor([[-2.1, 5.0], [-1.9, -5.0], [-0.1, 0.0], [0.1, 0.0], [1.9, 1.0], [2.1, 0.0]])
    assert t.assign(x).tolist() == [0, 1, 1, 2, 2, 3]


def test_eight_gaussians_and_grid_geometry():
    e = datasets.get_target("eight_gaussians")
    np.testing.assert_allclose(e.means.norm(dim=-1).numpy(), 1.0, rtol=1e-12)
    ang = torch.atan2(e.means[:, 1], e.means[:, 0]).numpy() % (2 * math.pi)
    np.testing.assert_allclose(ang, np.arange(8) * 2 * math.pi / 8, atol=1e-12)
    np.testing.assert_allclose(e.stds.numpy(), 0.15)
    g = datasets.get_target("gaussian_grid")
    ticks = (-2.0, 0.0, 2.0)
    assert {tuple(m) for m in g.means.tolist()} == {(a, b) for a in ticks for b in ticks}
    np.testing.assert_allclose(g.mode_weights.numpy(), 1 / 9)


def test_rings_log_prob_matches_radial_mixture():
    """p(x) = [p_r(|x|) + p_r(-|x|)] / (2 pi |x|), with p_r an independent scipy mixture of N(i+1, 0.15^2)."""
    t = datasets.get_target("rings")
    # near 0 the mirrored term p_r(-|x|) matters (at |x| -> 0 it doubles the density)
    r = np.array([1e-3, 0.05, 0.3, 0.9, 1.0, 1.5, 2.2, 3.0, 3.9, 4.6])
    theta = np.linspace(0.1, 6.0, r.size)
    x = torch.tensor(np.stack([r * np.cos(theta), r * np.sin(theta)], -1))

    def p_r(s):
        return sum(0.25 * stats.norm.pdf(s, loc=i + 1, scale=0.15) for i in range(4))

    expected = np.log(p_r(r) + p_r(-r)) - np.log(2 * np.pi * r)
    np.testing.assert_allclose(t.log_prob(x).numpy(), expected, rtol=1e-10)
    without_mirror = np.log(p_r(r[0])) - np.log(2 * np.pi * r[0])
    assert t.log_prob(x[0]).item() - without_mirror == pytest.approx(math.log(2), abs=0.1)
    # rotation invariance
    rot = torch.tensor(np.stack([r * np.cos(theta + 1.0), r * np.sin(theta + 1.0)], -1))
    np.testing.assert_allclose(t.log_prob(rot).numpy(), t.log_prob(x).numpy(), rtol=1e-10)


def test_rings_radial_integral_and_shell_masses():
    t = datasets.get_target("rings")
    # numerical radial integral of the Cartesian density: int_0^R 2 pi r p(r) dr per shell
    edges = [0.0, 1.5, 2.5, 3.5, 6.0]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        r = np.linspace(lo, hi, 20_001)[1:] if lo == 0 else np.linspace(lo, hi, 20_001)
        xy = torch.tensor(np.stack([r, np.zeros_like(r)], -1))
        integrand = 2 * np.pi * r * t.log_prob(xy).exp().numpy()
        mass = np.trapezoid(integrand, r)
        assert mass == pytest.approx(0.25, abs=1e-3), (lo, hi, mass)
    # and the same through a 2-D grid over the box
    nodes, area = grid(t.box, 1000, dtype=torch.float64)
    p = t.log_prob(nodes).exp() * area
    labels = t.assign(nodes)
    for k in range(4):
        assert p[labels == k].sum().item() == pytest.approx(0.25, abs=1e-4), k
    assert t.mode_weights.sum().item() == pytest.approx(1.0, abs=1e-15)
    # shells cut at radii 1.5, 2.5, 3.5, whatever the angle
    r = torch.tensor([0.0, 1.49, 1.51, 2.49, 2.51, 3.49, 3.51, 9.0], dtype=torch.float64)
    for a in (0.0, 0.7, 2.0, 4.0):
        pts = torch.stack([r * math.cos(a), r * math.sin(a)], -1)
        assert t.assign(pts).tolist() == [0, 0, 1, 1, 2, 2, 3, 3], a
        assert t.assign(pts.float()).tolist() == [0, 0, 1, 1, 2, 2, 3, 3], a


@pytest.mark.parametrize("name", SAMPLE_ONLY_TARGETS)
def test_sample_only_targets_raise_no_ground_truth(name):
    t = datasets.get_target(name)
    assert t.has_density is False
    assert t.has_modes is False
    x = t.sample(10, _gen(0))
    assert x.shape == (10, 2) and x.dtype == torch.float32
    with pytest.raises(NoGroundTruth):
        t.log_prob(x)
    with pytest.raises(NoGroundTruth):
        t.mode_weights  # noqa: B018
    with pytest.raises(NoGroundTruth):
        t.n_modes  # noqa: B018
    with pytest.raises(NoGroundTruth):
        t.assign(x)
    assert issubclass(NoGroundTruth, NotImplementedError)


@pytest.mark.parametrize("name", DENSITY_TARGETS + SAMPLE_ONLY_TARGETS)
def test_test_set_is_fixed_and_not_a_fresh_sample(name):
    t = datasets.get_target(name)
    a = t.test_set(500)
    b = datasets.get_target(name).test_set(500)
    assert a.shape == (500, 2)
    assert torch.equal(a, b)
    fresh = t.sample(500, _gen(0))
    assert not torch.equal(a, fresh)
    assert not torch.allclose(a, fresh, atol=1e-3)


def test_sampling_is_deterministic_given_a_generator():
    t = datasets.get_target("rings")
    assert torch.equal(t.sample(100, _gen(7)), t.sample(100, _gen(7)))
    assert not torch.equal(t.sample(100, _gen(7)), t.sample(100, _gen(8)))


def test_test_sets_differ_between_targets():
    a = datasets.get_target("two_mode").test_set(100)
    b = datasets.get_target("four_mode").test_set(100)
    assert not torch.allclose(a, b)


def test_get_target_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as info:
        datasets.get_target("nope")
    msg = str(info.value)
    assert "nope" in msg
    for name in datasets.TARGETS:
        assert name in msg


def test_gaussian_mixture_rejects_nonpositive_parameters():
    with pytest.raises(ValueError):
        GaussianMixture([[0.0, 0.0]], stds=0.0, weights=[1.0])
    with pytest.raises(ValueError):
        GaussianMixture([[0.0, 0.0], [1.0, 1.0]], stds=1.0, weights=[1.0, -1.0])


CAPABILITIES = {
    "two_mode": ["density", "modes", "mixture"],
    "rings": ["density", "modes"],
    "swiss_roll": [],
    "gmm50d": ["density", "modes", "mixture", "teacher", "region_masses"],
    "hd_mixture16": ["density", "modes", "mixture"],
    "biased_digits8": ["modes", "image", "classifier", "sample_quality", "data_files"],  # FID in every image run
    "digits8": ["modes", "image", "classifier", "sample_quality", "data_files"],
}


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_targets_declare_their_capabilities(name):
    t = datasets.get_target(name)
    assert t.capabilities() == CAPABILITIES[name]


@pytest.mark.parametrize("name", sorted(set(datasets.TARGETS) - set(IMAGE_TARGETS)))
def test_a_capability_a_target_lacks_raises_no_ground_truth(name):
    """What ``has`` says is what the methods do: a method of a capability the target lacks raises (no invented
    truth), one it has answers."""
    t = datasets.get_target(name)
    x = t.sample(3, _gen(0)).double()
    calls = {"density": lambda: t.log_prob(x), "modes": lambda: t.assign(x), "teacher": t.teacher_params,
             "region_masses": lambda: t.region_masses(torch.zeros(1, t.dim), torch.ones(1)),
             "classifier": t.classifier}
    for cap, call in calls.items():
        if t.has(cap):
            call()
        else:
            with pytest.raises(NoGroundTruth):
                call()


def test_unknown_capability_is_refused():
    with pytest.raises(KeyError, match="unknown capability 'teleport'; valid: density"):
        datasets.get_target("two_mode").has("teleport")
