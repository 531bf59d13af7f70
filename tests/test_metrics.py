"""Metrics against known answers: mode weights, density errors and grids, mixing diagnostics."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import math

import arviz_stats
import numpy as np
import pytest
import torch

import datasets
from metrics.density import (
    border_density_ratio,
    enlarged_box,
    grid,
    grid_log_normalizer,
    inside_box,
    mass_outside,
    median_sq_log_density_error,
)
from metrics.mixing import classic_rhat, ess_bulk, ess_tail, max_rhat, rhat
from metrics.modes import chain_mode_stay, grid_mode_weights, sample_mode_weights, weight_mse, weight_relative_error

# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("name", ["two_mode", "four_mode", "rings"])
def test_sample_mode_weights_of_exact_samples(name):
    t = datasets.get_target(name)
    n = 20_000
    x = t.sample(n, torch.Generator().manual_seed(5))
    w = sample_mode_weights(t.assign(x), t.n_modes)
    true = t.mode_weights.numpy()
    assert w.shape == (t.n_modes,) and w.dtype == np.float64
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.abs(w - true) < 5 * np.sqrt(true * (1 - true) / n)), (w, true)


def test_sample_mode_weights_known_counts_and_empty_modes():
    labels = torch.tensor([0, 2, 2, 2, 0, 2, 2, 2])
    np.testing.assert_array_equal(sample_mode_weights(labels, 4), [0.25, 0.0, 0.75, 0.0])
    # any shape of labels is flattened
    np.testing.assert_array_equal(sample_mode_weights(labels.reshape(2, 4), 3), [0.25, 0.0, 0.75])
    with pytest.raises(ValueError):
        sample_mode_weights(torch.tensor([], dtype=torch.long), 3)


def test_sample_mode_weights_with_importance_weights():
    """Weighted samples (Jarzynski walkers) count with their normalised weight: unnormalised weights 1, 3 in mode
    0 and 4 in mode 2 give 0.5 / 0 / 0.5, not the plain counts' 2/3 / 0 / 1/3; a mismatched length is refused."""
    labels = torch.tensor([0, 0, 2])
    np.testing.assert_allclose(sample_mode_weights(labels, 3, torch.tensor([1.0, 3.0, 4.0])), [0.5, 0.0, 0.5])
    # equal weights give the plain histogram
    np.testing.assert_allclose(sample_mode_weights(labels, 3, torch.full((3,), 0.2)), [2 / 3, 0.0, 1 / 3])
    with pytest.raises(ValueError):
        sample_mode_weights(labels, 3, torch.ones(2))


def test_chain_mode_stay_known_values():
    """Largest share of a chain's draws in one region, averaged over chains: 1 for trapped chains, 1/4 for chains
    that spend equal time in 4 regions, and the mean of the per-chain shares otherwise (the mean, not the max or
    the share of the most visited mode over all chains)."""
    trapped = np.repeat(np.arange(4), 8).reshape(4, 8)  # chain k sits in region k throughout
    assert chain_mode_stay(trapped) == 1.0
    hopping = np.tile(np.arange(4), (4, 5))  # every chain cycles through the 4 regions
    assert chain_mode_stay(hopping) == 0.25
    mixed = np.array([[0, 0, 0, 1], [2, 2, 3, 3], [1, 1, 1, 1]])  # shares 3/4, 1/2, 1
    assert chain_mode_stay(mixed) == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    # chains all trapped in one region still stay; the labels' values do not matter, only the partition
    assert chain_mode_stay(np.full((3, 5), 7)) == 1.0
    for bad in (np.zeros(5, int), np.zeros((0, 4), int), np.zeros((2, 3, 1), int)):
        with pytest.raises(ValueError, match="chain, draw"):
            chain_mode_stay(bad)
    with pytest.raises(ValueError, match="non-negative"):
        chain_mode_stay(np.array([[0, -1]]))


def test_weight_mse_known_values():
    true = [0.1, 0.2, 0.3, 0.4]
    assert weight_mse(true, true) == 0.0
    # errors (0.1, 0, -0.1, 0): mean of squares 0.02 / 4
    assert weight_mse([0.2, 0.2, 0.2, 0.4], true) == pytest.approx(0.005, rel=1e-12)
    assert weight_mse(np.array([0.0, 0.0, 0.0, 1.0]), np.array(true)) == pytest.approx(
        (0.01 + 0.04 + 0.09 + 0.36) / 4, rel=1e-12
    )
    with pytest.raises(ValueError):
        weight_mse([0.5, 0.5], true)


def test_weight_relative_error_known_values():
    rel = weight_relative_error([0.2, 0.2, 0.2, 0.4], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(rel, [1.0, 0.0, -1 / 3, 0.0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["two_mode", "four_mode"])
def test_grid_mode_weights_of_exact_density(name):
    t = datasets.get_target(name)
    nodes, _ = grid(t.box, 400, dtype=torch.float64)
    lp = t.log_prob(nodes)
    labels = t.assign(nodes)
    w = grid_mode_weights(lp, labels, t.n_modes)
    np.testing.assert_allclose(w, t.mode_weights.numpy(), atol=1e-4)
    # unnormalised input: a constant (large, either sign) does not matter
    for c in (-500.0, 3.0, 800.0):
        np.testing.assert_allclose(grid_mode_weights(lp + c, labels, t.n_modes), w, atol=1e-12)


def test_grid_mode_weights_follow_the_density_not_the_target():
    """A density with other weights on the same regions gives those weights."""
    t = datasets.get_target("four_mode")
    other = datasets.GaussianMixture(t.means, t.stds, [0.4, 0.3, 0.2, 0.1])
    nodes, _ = grid(t.box, 400, dtype=torch.float64)
    w = grid_mode_weights(other.log_prob(nodes), t.assign(nodes), 4)
    np.testing.assert_allclose(w, [0.4, 0.3, 0.2, 0.1], atol=1e-3)
    # hand-made: two nodes per region, masses 1:3 between regions
    lp = torch.log(torch.tensor([1.0, 1.0, 3.0, 3.0]))
    np.testing.assert_allclose(grid_mode_weights(lp, torch.tensor([0, 0, 1, 1]), 3), [0.25, 0.75, 0.0])


# ---------------------------------------------------------------- density


def test_median_sq_log_density_error_identical_is_zero():
    x = torch.randn(101, 2, generator=torch.Generator().manual_seed(0))
    lp = datasets.get_target("two_mode").log_prob(x)
    assert median_sq_log_density_error(lp, lp.clone()) == 0.0


def test_median_sq_log_density_error_known_offset_odd():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(11, generator=g, dtype=torch.float64)
    c = torch.tensor([0.1, -2.0, 3.0, 0.5, -0.2, 1.5, -0.7, 0.05, 2.5, -1.2, 0.9], dtype=torch.float64)
    got = median_sq_log_density_error(base + c, base)
    assert got == float(np.median(c.numpy() ** 2))
    assert got == pytest.approx(0.81, rel=1e-12)  # sorted squares: ..., 0.49, 0.81, 1.44, ...
    # symmetric in its arguments and accepts any matching shapes
    assert median_sq_log_density_error(base, base + c) == pytest.approx(got, rel=1e-12)


def test_median_sq_log_density_error_even_count_is_the_usual_median():
    """With an even number of points the median is the mean of the two middle values (as numpy's)."""
    c = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)  # squares 1, 4, 9, 16
    assert median_sq_log_density_error(c, torch.zeros(4, dtype=torch.float64)) == pytest.approx(6.5)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    expected = float(np.median((a.double().numpy() - b.double().numpy()) ** 2))
    assert median_sq_log_density_error(a, b) == pytest.approx(expected, rel=1e-12)


def test_median_sq_log_density_error_shape_mismatch():
    with pytest.raises(ValueError):
        median_sq_log_density_error(torch.zeros(5), torch.zeros(6))


def test_grid_nodes_at_cell_centres():
    nodes, area = grid(((0.0, 2.0), (-1.0, 0.0)), 4)
    assert nodes.shape == (16, 2) and nodes.dtype == torch.float32
    assert area == pytest.approx(0.5 * 0.25)
    xs = [0.25, 0.75, 1.25, 1.75]
    ys = [-0.875, -0.625, -0.375, -0.125]
    # x varies fastest (row-major image layout: nodes.reshape(n, n, 2)[iy, ix])
    expected = torch.tensor([[x, y] for y in ys for x in xs])
    torch.testing.assert_close(nodes, expected)
    n64, a64 = grid(((-3.0, 3.0), (-2.0, 2.0)), 30, dtype=torch.float64)
    assert n64.dtype == torch.float64 and n64.shape == (900, 2)
    assert a64 == pytest.approx(0.2 * (4 / 30))
    # every node lies strictly inside the box, half a cell from the border
    assert n64[:, 0].min().item() == pytest.approx(-3.0 + 0.1)
    assert n64[:, 1].max().item() == pytest.approx(2.0 - 2 / 30)


def test_grid_log_normalizer_of_unnormalised_gaussian():
    s, m = 0.4, torch.tensor([0.3, -0.2], dtype=torch.float64)
    nodes, area = grid(((-3.0, 3.0), (-3.0, 3.0)), 300, dtype=torch.float64)
    log_u = -((nodes - m) ** 2).sum(-1) / (2 * s**2) + 7.0
    log_z = grid_log_normalizer(log_u, area)
    assert log_z == pytest.approx(7.0 + math.log(2 * math.pi * s**2), abs=1e-4)
    # the float32 grid is good enough too (the normaliser is summed in float64)
    n32, a32 = grid(((-3.0, 3.0), (-3.0, 3.0)), 300)
    log_u32 = -((n32 - m.float()) ** 2).sum(-1) / (2 * s**2)
    assert grid_log_normalizer(log_u32, a32) == pytest.approx(math.log(2 * math.pi * s**2), abs=1e-4)


def test_enlarged_box_keeps_the_centre():
    assert enlarged_box(((0.0, 2.0), (-1.0, 3.0)), 3) == ((-2.0, 4.0), (-5.0, 7.0))
    assert enlarged_box(((-2.0, 2.0), (-2.0, 2.0)), 1) == ((-2.0, 2.0), (-2.0, 2.0))


def test_inside_box_is_closed_and_per_axis():
    x = torch.tensor([[0.0, 0.0], [2.0, 3.0], [2.01, 0.0], [1.0, -1.01], [-0.5, 2.9]])
    np.testing.assert_array_equal(inside_box(x, ((-1.0, 2.0), (-1.0, 3.0))), [True, True, False, False, True])


def test_mass_outside_known_values():
    inside = torch.tensor([True, True, False, False])
    # masses 1, 1, 3, 5: 8 of 10 outside; any constant offset of the log-density cancels
    lu = torch.log(torch.tensor([1.0, 1.0, 3.0, 5.0], dtype=torch.float64))
    for c in (-700.0, 0.0, 700.0):
        assert mass_outside(lu + c, inside) == pytest.approx(0.8, rel=1e-12)
    assert mass_outside(torch.tensor([0.0, -math.inf, -math.inf, -math.inf]), inside) == 0.0
    # +inf nodes take all the mass, shared equally
    assert mass_outside(torch.tensor([math.inf, 0.0, math.inf, math.inf]), inside) == pytest.approx(2 / 3)
    assert math.isnan(mass_outside(torch.tensor([0.0, math.nan, 0.0, 0.0]), inside))
    with pytest.raises(ValueError):
        mass_outside(torch.zeros(3), inside)


def test_mass_outside_of_a_gaussian_on_the_enlarged_grid():
    """N(0, I) on [-1, 1]^2 within [-3, 3]^2: 1 - (P(|Z| < 1) / P(|Z| < 3))^2, with the inner box exactly the
    middle third of the cells."""
    box = ((-1.0, 1.0), (-1.0, 1.0))
    nodes, _ = grid(enlarged_box(box, 3), 3 * 40, dtype=torch.float64)
    inside = inside_box(nodes, box)
    assert int(inside.sum()) == 40 * 40
    frac = (math.erf(1 / math.sqrt(2)) / math.erf(3 / math.sqrt(2))) ** 2
    assert mass_outside(-0.5 * (nodes**2).sum(-1), inside) == pytest.approx(1 - frac, rel=1e-3)


def test_border_density_ratio_known_values():
    img = torch.full((4, 4), -10.0, dtype=torch.float64)
    img[1, 2] = 0.0  # the maximum, inside
    img[0, 3] = -2.0  # the border's maximum (a corner)
    assert border_density_ratio(img) == pytest.approx(math.exp(-2.0), rel=1e-12)
    img[3, 1] = 1.0  # now the peak lies on the border
    assert border_density_ratio(img) == 1.0
    for r, c in [(0, 1), (3, 2), (2, 0), (1, 3)]:  # every side of the ring counts
        one = torch.full((4, 4), -5.0)
        one[1, 1] = 0.0
        one[r, c] = -1.0
        assert border_density_ratio(one) == pytest.approx(math.exp(-1.0), rel=1e-6)
    assert border_density_ratio(torch.tensor([[0.0, math.inf], [0.0, 0.0]])) == 1.0
    assert math.isnan(border_density_ratio(torch.tensor([[0.0, math.nan], [0.0, 0.0]])))
    with pytest.raises(ValueError):
        border_density_ratio(torch.zeros(9))


# ---------------------------------------------------------------- mixing


def _iid(seed=0, shape=(8, 1000, 2)):
    return np.random.default_rng(seed).standard_normal(shape)


def test_iid_chains_have_rhat_one_and_full_ess():
    x = _iid()
    r = rhat(x)
    assert r.shape == (2,)
    assert max_rhat(x) < 1.01
    assert max_rhat(x) == pytest.approx(r.max())
    ess = ess_bulk(x)
    assert ess.shape == (2,)
    np.testing.assert_allclose(ess, 8000, rtol=0.15)
    tail = ess_tail(x)
    assert tail.shape == (2,)
    assert np.all(tail > 0.5 * 8000)


def test_stuck_chains_have_large_rhat():
    x = _iid(1)
    offsets = np.array([3.0, -3.0] * 4)[:, None, None]  # 4 chains in one mode, 4 in the other
    assert max_rhat(x + offsets) > 1.5
    assert np.all(classic_rhat(x + offsets) > 1.5)
    # ESS collapses too: the chains disagree
    assert ess_bulk(x + offsets).max() < 0.1 * 8000


def test_mixing_agrees_with_arviz_stats_called_directly():
    x = _iid(2) + np.array([0.0, 0.3])
    x[:3] += 0.5  # some between-chain disagreement so R-hat is not trivially 1
    r, eb, et = rhat(x), ess_bulk(x), ess_tail(x)
    for k in range(2):
        xk = np.ascontiguousarray(x[:, :, k])  # (chain, draw), arviz's own layout
        assert r[k] == pytest.approx(float(arviz_stats.rhat(xk)), rel=1e-10)
        assert eb[k] == pytest.approx(float(arviz_stats.ess(xk, method="bulk")), rel=1e-10)
        assert et[k] == pytest.approx(float(arviz_stats.ess(xk, method="tail", prob=(0.05, 0.95))), rel=1e-10)
    # and with another axis layout: (draw, dim, chain)
    xt = np.transpose(x, (1, 2, 0))
    np.testing.assert_allclose(r, arviz_stats.rhat(xt, chain_axis=2, draw_axis=0), rtol=1e-10)
    assert r.max() > 1.01  # the disagreement is visible


def test_two_dim_input_is_one_dimension():
    x = _iid(3, (4, 200))
    assert rhat(x).shape == (1,)
    assert rhat(x)[0] == pytest.approx(rhat(x[..., None])[0])


def _ar1(rho, chains, draws, seed):
    rng = np.random.default_rng(seed)
    x = np.empty((chains, draws))
    x[:, 0] = rng.standard_normal(chains) / math.sqrt(1 - rho**2)  # stationary start
    eps = rng.standard_normal((chains, draws))
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    return x[..., None]


def test_ess_of_ar1_chains():
    rho, chains, draws = 0.9, 8, 5000
    x = _ar1(rho, chains, draws, seed=4)
    expected = chains * draws * (1 - rho) / (1 + rho)
    assert ess_bulk(x)[0] == pytest.approx(expected, rel=0.2)
    assert max_rhat(x) < 1.01


def test_classic_rhat_by_hand():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]])
    # n = 4; chain variances (ddof 1) 5/3 each -> W = 5/3; chain means 2.5, 3.5 -> B = 4 * 0.5 = 2
    # R = sqrt((3/4 W + B/4) / W) = sqrt((1.25 + 0.5) / (5/3)) = sqrt(1.05)
    r = classic_rhat(x)
    assert r.shape == (1,)
    assert r[0] == pytest.approx(math.sqrt(1.05), rel=1e-12)
    # per dimension, on a (chain, draw, dim) array
    y = np.stack([x, 2 * x + 1, np.array([[1.0, 3.0, 1.0, 3.0], [1.0, 3.0, 1.0, 3.0]])], -1)
    expected = [math.sqrt(1.05), math.sqrt(1.05), math.sqrt(0.75)]
    np.testing.assert_allclose(classic_rhat(y), expected, rtol=1e-12)


def test_classic_rhat_of_chains_that_never_move(recwarn):
    """Stuck chains (W = 0): inf when they sit apart (no mixing), nan when all sit at one value; no warning."""
    apart = np.array([[1.0] * 4, [2.0] * 4])
    same = np.ones((2, 4))
    assert np.isposinf(classic_rhat(apart)[0])
    assert np.isnan(classic_rhat(same)[0])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize(
    "shape",
    [(1, 100, 2), (4, 3, 2), (100,), (2, 10, 2, 2)],
    ids=["one_chain", "three_draws", "1d", "4d"],
)
@pytest.mark.parametrize("fn", [rhat, max_rhat, ess_bulk, ess_tail, classic_rhat])
def test_bad_shapes_raise(shape, fn):
    with pytest.raises(ValueError):
        fn(np.zeros(shape))
