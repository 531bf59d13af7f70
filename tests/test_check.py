"""The metric regression gate: intact code passes its baseline, a deliberately broken algorithm fails it
with a readable table; the HTML report is self-contained."""

import pandas as pd
import pytest

import algorithms
from algorithms.contrastive import contrastive_update
from bench import suite as suite_mod
from bench.cli import main

SUITE = """targets = ["two_mode"]
algorithms = ["cd"]
[fidelity.quick]
seeds = 2
[fidelity.quick.defaults]
n_data = 2048
batch_size = 64
n_iters = 150
lr = 0.01
n_steps = 5
step_size = 0.01
eval_grid = 60
n_eval_samples = 1000
n_chains = 4
n_draws = 16
n_negatives = 256
"""


class SignFlipped(algorithms.ALGORITHMS["cd"]):
    """CD with the sign of the update flipped: ascends the likelihood instead of descending."""

    def step(self, x_pos):
        x_neg = self.sample(self.start_chains(x_pos))
        self.keep(x_neg)
        self._neg = x_neg
        _, stats = contrastive_update(self.energy, self.optimizer, x_neg, x_pos, 0.0, self.work)
        return stats


@pytest.fixture()
def tiny_suite(tmp_path, monkeypatch):
    d = tmp_path / "suites"
    d.mkdir()
    (d / "tiny.toml").write_text(SUITE)
    monkeypatch.setattr(suite_mod, "SUITES_DIR", d)
    return tmp_path


def test_intact_passes_broken_fails(tiny_suite, monkeypatch, capsys):
    base = tiny_suite / "base.csv"
    common = ["--suite", "tiny", "--baseline", str(base), "-j", "1"]
    assert main(["baseline", *common, "--out", str(tiny_suite / "r0")]) == 0
    b = pd.read_csv(base)
    assert {"logp_median_sq_error", "ebm_weight_mse", "kl"} <= set(b["metric"]) and (b["n_runs"] == 2).all()
    capsys.readouterr()
    assert main(["check", *common, "--out", str(tiny_suite / "r1")]) == 0  # recomputed from scratch
    assert "0 regression(s)" in capsys.readouterr().out

    monkeypatch.setitem(algorithms.ALGORITHMS, "cd", SignFlipped)
    assert main(["check", *common, "--out", str(tiny_suite / "r2")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "logp_median_sq_error" in out
    header = out.splitlines()[1]
    for col in ["target", "algorithm", "metric", "mean_base", "mean", "tolerance", "verdict"]:
        assert col in header


def test_check_needs_a_baseline(tiny_suite, capsys):
    assert main(["check", "--suite", "tiny", "--baseline", str(tiny_suite / "none.csv")]) == 2
    assert "no such baseline" in capsys.readouterr().err


def test_html_report_is_self_contained(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--suite", "toy2d", "--fidelity", "smoke", "--algorithms", "cd", "--targets", "two_mode",
                 "four_mode", "--out", str(out), "-j", "1", "--no-report"]) == 0
    assert main(["report", "--results", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "000 Table 3" in page and "<table" in page
    assert "src='http" not in page and 'src="http' not in page
