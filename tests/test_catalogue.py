"""The metric declarations (metrics/catalogue.py) and the loop that runs them (bench/evaluation.py ``measure``)."""

import numpy as np
import pytest

from bench import evaluation
from bench.evaluation import Quantities, measure, of_given
from metrics import catalogue
from metrics.catalogue import QUANTITIES, STAGES, Gate, Metric


def test_every_quantity_is_measured_and_nothing_else_is():
    methods = {n[1:] for n in vars(Quantities) if n.startswith("_") and not n.startswith("__")}
    helpers = {"grid", "generated", "label_samples", "evaluation_chains"}
    assert methods - helpers == set(QUANTITIES)
    assert all(stage in STAGES for stage, _ in QUANTITIES.values())


def test_names_patterns_and_values():
    m = Metric("ebm_weight[k]", "x", ("model_weights",), lambda w: w)
    assert m.pattern.fullmatch("ebm_weight[3]") and not m.pattern.fullmatch("ebm_weight_mse")
    assert m.values(np.array([0.25, 0.75])) == {"ebm_weight[0]": 0.25, "ebm_weight[1]": 0.75}
    fid = Metric("fid_<extractor>", "x", ("quality",), lambda q: q)
    assert fid.values({"classifier": 3.0, "inception": 7.5}) == {"fid_classifier": 3.0, "fid_inception": 7.5}
    assert fid.pattern.fullmatch("fid_inception") and fid.instance("classifier") == "fid_classifier"
    scalar = Metric("kl", "x", ("test_logp_true", "test_logp_model"), lambda t, m: None if t is m else t - m)
    assert scalar.values(2.0, 0.5) == {"kl": 1.5} and scalar.values(1.0, 1.0) == {}
    assert scalar.stage == "model" and Metric("n", "x", ("negatives", "model_weights"), min).stage == "samples"
    assert Metric("param_error[name]", "x", headline={"param_error[a]": "err[a]"}).headlines() == {
        "param_error[a]": "err[a]"}


def test_the_built_in_order_keeps_the_headline_columns():
    heads = [label for m in catalogue.BUILT_IN for label in m.headlines().values()]
    assert heads == ["w0", "weight_mse", "kl", "kl_est", "logz_err", "err[a]", "err[b]", "resamples", "ess",
                     "logp_mse", "test_ll", "flow_test_ll", "flow_kl", "nfe/iter", "max_rhat", "rhat_det", "ess_bulk"]


class Counting(Quantities):
    """Quantities whose chain starts are counted (they draw random numbers)."""

    drawn = 0

    def _init_mode_weights(self):
        Counting.drawn += 1
        return np.array([0.5, 0.5])


def test_a_metric_whose_needs_are_not_all_there_draws_nothing():
    """init_weight_mse_vs_ebm needs the chain starts' weights (drawn) and the model's: without the model's weights
    (a target the model cannot be weighed on) no chain start is drawn, so the random stream is as before."""
    for model_weights, drawn in ((None, 0), (np.array([0.25, 0.75]), 1)):
        none = {n: None for n in QUANTITIES if n != "init_mode_weights"}
        q = Counting(None, None, given={**none, "model_weights": model_weights})
        q.probe = object()  # measured, not given: the counted quantity does not read the probe
        out = measure(q, "samples")
        assert Counting.drawn == drawn
        assert out == ({} if model_weights is None else {"init_weight_mse_vs_ebm": pytest.approx(0.0625)})


def test_metrics_of_given_quantities_known_answers():
    out = of_given("samples", label_weights=np.array([0.5, 0.3, 0.2]), true_weights=np.array([0.4, 0.4, 0.2]),
                   off_class_share=0.1, classifier_accuracy=0.9)
    assert out["label_weight_relerr[0]"] == pytest.approx(0.25) and out["label_weight_relerr[2]"] == 0
    assert out["label_weight_relerr_mean"] == pytest.approx((0.25 + 0.25 + 0) / 3)
    assert out["off_class_share"] == 0.1 and out["classifier_accuracy"] == 0.9
    model = of_given("model", model_weights=np.array([0.3, 0.7]), true_weights=np.array([0.5, 0.5]),
                     test_logp_true=np.array([-1.0, -2.0]), test_logp_model=np.array([-1.5, -3.5]))
    assert model["ebm_weight_mse"] == pytest.approx(0.04) and model["kl"] == pytest.approx(1.0)
    assert model["test_loglik"] == pytest.approx(-2.5) and model["ebm_weight_relerr[0]"] == pytest.approx(-0.4)


def test_a_registered_plug_in_metric_is_measured(monkeypatch):
    worst = Metric("ebm_weight_max_error", "max |w_k - w*_k|", ("model_weights", "true_weights"),
                   lambda w, t: float(np.abs(w - t).max()), trace=True, better=-1, gate=Gate(floor=1e-3))
    monkeypatch.setattr(catalogue, "METRICS", {**catalogue.METRICS, worst.name: worst})
    out = of_given("model", model_weights=np.array([0.3, 0.7]), true_weights=np.array([0.5, 0.5]))
    assert out["ebm_weight_max_error"] == pytest.approx(0.2)
    assert evaluation.declared("ebm_weight_max_error") and evaluation.declared("ebm_weight[7]")
    assert not evaluation.declared("my_algorithms_own_number")


def chains_with_known_dimensions(seed=0):
    """(8 chains, 200 draws, 4 dims): dim 0 iid N(0, 1) (mixed), dim 1 the chains half a unit apart (trapped:
    the largest R-hat and smallest ESS), dim 2 an AR(1) with rho 0.97 (slow), dim 3 iid Student-t(2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 200, 4))
    x[:, :, 1] += 0.5 * np.arange(8)[:, None]
    for t in range(1, 200):
        x[:, t, 2] = 0.97 * x[:, t - 1, 2] + np.sqrt(1 - 0.97**2) * x[:, t, 2]
    x[:, :, 3] = rng.standard_t(2, size=(8, 200))
    return x


def test_chain_metrics_report_the_worst_dimension():
    """max R-hat is the largest over dimensions and min ESS the smallest (000 Table 2: max over dimensions), not a
    mean or median; the noise-free chains' R-hat likewise, ignoring dimensions where it is undefined."""
    from metrics.mixing import classic_rhat, ess_bulk, ess_tail, rhat

    x = chains_with_known_dimensions()
    r, c, eb, et = rhat(x), classic_rhat(x), ess_bulk(x), ess_tail(x)
    assert r.argmax() == 1 and r.max() > 1.3 > np.median(r)  # the dimensions differ: a mean would not pass
    assert eb.min() < 0.1 * np.median(eb) and et.min() < 0.2 * np.median(et)
    out = evaluation.mixing(x, stochastic=True)
    assert out == {"max_rhat": r.max(), "max_rhat_classic": c.max(), "min_ess_bulk": eb.min(),
                   "min_ess_tail": et.min()}
    assert evaluation.mixing(x, stochastic=False) == {"max_rhat_deterministic": r.max()}
    # every chain at one value in dim 0: its R-hat is undefined. The noise-free figure reads the other dimensions;
    # the stochastic max R-hat is then undefined too, not the other dimensions' maximum (frozen chains do not mix)
    x[:, :, 0] = 1.0
    with np.errstate(invalid="ignore"):  # arviz divides 0 by 0 there
        assert evaluation.mixing(x, stochastic=False) == {"max_rhat_deterministic": r.max()}
        assert np.isnan(evaluation.mixing(x, stochastic=True)["max_rhat"])


def test_parameter_error_is_the_euclidean_distance_to_the_teacher():
    import torch

    out = of_given("model", teacher_params={"a": [1.0, 2.0], "b": 0.5, "d": 3.0},
                   model_params={"a": torch.tensor([4.0, 6.0], dtype=torch.float64),
                                 "b": torch.tensor(0.25, dtype=torch.float64),
                                 "c": torch.tensor(9.0, dtype=torch.float64)})
    assert out["param_error[a]"] == pytest.approx(5.0) and out["param_error[b]"] == pytest.approx(0.25)
    assert "param_error[c]" not in out and "param_error[d]" not in out  # only parameters both have
