"""``bench test-plugin`` on targets, energies and metrics (bench/contracts.py): the suite's own pass, broken ones
fail with exit status 1 and a line naming the check."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import datasets
from algorithms.energies import Energy, QuadraticEnergy
from bench import contracts
from bench.cli import main
from datasets.base import GaussianMixture
from datasets.highdim import HDMixture
from metrics.catalogue import Metric

TRIANGLE = dict(means=[[-2.0, -1.5], [2.0, -1.5], [0.0, 2.0]], stds=0.4, weights=[0.2, 0.3, 0.5],
                box=[(-4.0, 4.0), (-4.0, 4.0)])


class OffByConstant(GaussianMixture):
    name = "off_by_constant"

    def __init__(self):
        super().__init__(**TRIANGLE)

    def log_prob(self, x):
        return super().log_prob(x) + 0.5


class WrongWeights(GaussianMixture):
    name = "wrong_weights"

    def __init__(self):
        super().__init__(**TRIANGLE)

    @property
    def mode_weights(self):
        return torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


class WrongSampler(GaussianMixture):
    """Samples the weights reversed; states and evaluates the right ones."""

    name = "wrong_sampler"

    def __init__(self):
        super().__init__(**TRIANGLE)

    def sample(self, n, generator=None):
        return GaussianMixture(**{**TRIANGLE, "weights": [0.5, 0.3, 0.2]}).sample(n, generator)


class HDOffByConstant(HDMixture):
    name = "hd_off"

    def log_prob(self, x):
        return super().log_prob(x) - 0.1


def verdicts(checks) -> dict:
    return {check: ok for check, ok, _ in checks}


@pytest.mark.parametrize("name", ["two_mode", "rings", "gmm1d", "hd_mixture16_unequal", "gmm50d", "swiss_roll"])
def test_the_suites_own_targets_pass(name):
    checks = contracts.check_target(datasets.get_target(name))
    assert all(ok is not False for _, ok, _ in checks), checks
    assert sum(ok is True for _, ok, _ in checks) >= 2


@pytest.mark.parametrize("cls, failed", [
    (OffByConstant, "log_prob integrates to 1 on its box"),
    (HDOffByConstant, "log_prob integrates to 1"),
    (WrongWeights, "its stated mode weights match assign on its samples"),
    (WrongSampler, "its samples agree with log_prob"),
])
def test_a_broken_target_fails_the_check_that_names_its_fault(cls, failed):
    v = verdicts(contracts.check_target(cls()))
    assert v[failed] is False
    assert [c for c, ok in v.items() if ok is False] == [failed] or cls is WrongSampler, v


class BatchNormed(Energy):
    """U depends on the rest of the batch (batch statistics): a point has no energy of its own."""

    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


class WrongLogZ(QuadraticEnergy):
    def log_z(self):
        return super().log_z() + 0.3


def test_energies_pass_or_fail_by_name():
    assert all(ok is not False for _, ok, _ in contracts.check_energy(QuadraticEnergy))
    assert verdicts(contracts.check_energy(BatchNormed))["a point's energy does not depend on its batch"] is False
    assert verdicts(contracts.check_energy(WrongLogZ))["its exact log Z is right"] is False


def test_a_metric_is_computed_on_the_tiny_case_or_says_why_not():
    worst = Metric("neg_weight_max_error", "max |w_k - w*_k| of the negatives", ("negative_mode_weights",
                   "true_weights"), lambda w, t: float(np.abs(w - t).max()), trace=True)
    v = verdicts(contracts.check_metric(worst, n_iters=10))
    assert v == {"computed after training, finite": True, "a function of its needs (the same twice)": True,
                 "measured along training (trace)": True}
    nan = Metric("nan_metric", "always NaN", ("true_weights",), lambda t: math.nan)
    assert verdicts(contracts.check_metric(nan, n_iters=10))["computed after training, finite"] is False
    (check, ok, detail), = contracts.check_metric(Metric("labels", "x", ("label_weights",), len), n_iters=10)
    assert ok is None and "needs label_weights" in detail


BROKEN = '''
from datasets.base import GaussianMixture


class OffByConstant(GaussianMixture):
    name = "off_by_constant"

    def __init__(self):
        super().__init__(means=[[-2.0, -1.5], [2.0, -1.5], [0.0, 2.0]], stds=0.4, weights=[0.2, 0.3, 0.5],
                         box=[(-4.0, 4.0), (-4.0, 4.0)])

    def log_prob(self, x):
        return super().log_prob(x) + 0.5
'''


def test_test_plugin_on_a_good_and_a_broken_target(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_broken.py").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    assert main(["test-plugin", "two_mode"]) == 0
    out = capsys.readouterr().out
    assert "TwoMode (built-in): 5 of 5 checks passed" in out
    assert main(["test-plugin", "my_broken:OffByConstant"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in out if ln.startswith("FAIL")] == ["FAIL  log_prob integrates to 1 on its box"]
    assert out[-1].endswith("4 of 5 checks passed")
    assert main(["test-plugin", "quadratic", "--set", "lr=1"]) == 2  # --set is for algorithms
    assert "--set is for an algorithm's Config; 'quadratic' is an energy" in capsys.readouterr().err
