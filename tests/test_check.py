"""The metric regression gate: hand-made fixtures with known answers (a metric made worse by a known factor
while every run finishes is flagged, an improvement is not, each metric's better direction is the right
one, unusable baselines are excluded with their reason), the baseline command's refusals, and end to end: intact
code passes its baseline, a deliberately broken algorithm fails it; the HTML report is self-contained."""

import math

import numpy as np
import pandas as pd
import pytest

import algorithms
from algorithms.contrastive import contrastive_update
from bench import check
from bench import suite as suite_mod
from bench.cli import main
from bench.store import atomic_write_csv

SUITE = """targets = ["two_mode"]
algorithms = ["cd"]
[fidelity.quick]
seeds = 3
[fidelity.quick.defaults]
n_data = 2048
batch_size = 64
n_iters = 80
lr = 0.01
n_steps = 5
step_size = 0.01
eval_grid = 40
n_eval_samples = 500
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
    assert main(["baseline", *common, "--seeds", "3", "--out", str(tiny_suite / "r0")]) == 0
    b = pd.read_csv(base)
    assert {"logp_median_sq_error", "ebm_weight_mse", "kl"} <= set(b["metric"]) and (b["n_runs"] == 3).all()
    capsys.readouterr()
    assert main(["check", *common, "--out", str(tiny_suite / "r1")]) == 0  # recomputed from scratch
    assert " 0 regression(s)" in capsys.readouterr().out

    monkeypatch.setitem(algorithms.ALGORITHMS, "cd", SignFlipped)
    assert main(["check", *common, "--out", str(tiny_suite / "r2")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "logp_median_sq_error" in out
    header = next(line for line in out.splitlines() if line.split()[:3] == ["target", "algorithm", "metric"])
    for col in ["check", "scale", "mean_base", "mean", "worse_by", "tolerance"]:
        assert col in header
    assert "verdict" in out  # the table wraps at 120 columns


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


# ---------------------------------------------------------------------------------------------------------
# Hand-made fixtures: long-format results as the runner writes them, values chosen per seed.

def results(values: dict, algorithm="a", target="t", suite="s", fidelity="quick", status=None, improper=None):
    """{metric: [value per seed]} -> long-format rows; ``status``/``improper``: per seed."""
    n = len(next(iter(values.values())))
    status = status or ["ok"] * n
    rows = []
    for seed in range(n):
        vals = dict(values)
        if improper is not None:
            vals["improper"] = [float(x) for x in improper]
        for metric, v in vals.items():
            rows.append({"suite": suite, "fidelity": fidelity, "target": target, "algorithm": algorithm,
                         "seed": seed, "metric": metric, "value": v[seed], "status": status[seed]})
    return pd.DataFrame(rows)


def verdict(base_values, now_values, metric="kl", **kw):
    base = check.make_baseline(results({metric: base_values}, **kw))
    now = kw.pop("now", None)
    cmp = check.compare(results({metric: now_values}, **(now or kw)), base)
    return cmp.set_index("metric").loc[metric]


KL = [0.10, 0.12, 0.11, 0.13]  # log-scale spread 0.11: tolerance clip(4 * 0.11 * sqrt(1/2), log 1.25, log 3) = 0.31


def test_tolerance_is_the_known_value():
    z = np.log(np.array(KL) + 1e-3)
    expected = 4.0 * z.std(ddof=1) * math.sqrt(1 / 4 + 1 / 4)
    row = verdict(KL, KL)
    assert row["tolerance"] == pytest.approx(expected) and row["worse_by"] == pytest.approx(0.0)
    assert row["verdict"] == "ok"


@pytest.mark.parametrize("factor, flagged", [(3.0, True), (1.6, True), (1.1, False), (1 / 3, False), (1 / 100, False)])
def test_worse_by_a_known_factor_is_flagged_improvement_is_not(factor, flagged):
    row = verdict(KL, [v * factor for v in KL])
    z = np.log(np.array(KL) + 1e-3)  # the log scale with kl's floor of 1e-3
    assert row["worse_by"] == pytest.approx(np.mean(np.log(np.array(KL) * factor + 1e-3)) - np.mean(z))
    assert (row["verdict"] == "REGRESSION") == flagged, row


def test_tolerance_is_capped_even_when_the_new_seeds_scatter():
    """Baseline spread 0.35 in log: gated (4 * 0.35 * sqrt(2/4) = 0.99 < log 3). The new seeds are 4 times worse
    on average and scatter widely: without the cap their pooled spread would tolerate it."""
    base = list(np.exp(np.log(0.1) + 0.35 * np.array([-1.16, -0.39, 0.39, 1.16])))
    now = [0.4 * f for f in (0.05, 0.5, 2.0, 20.0)]
    row = verdict(base, now)
    assert row["tolerance"] == pytest.approx(math.log(3))
    assert row["verdict"] == "REGRESSION"


# the meaning of each checked metric, written independently of the declarations' gates: which way is worse
LOWER_IS_BETTER = ["kl", "ebm_weight_mse", "neg_weight_mse", "logp_median_sq_error", "mass_outside_box",
                   "param_error[a]"]
HIGHER_IS_BETTER = ["min_ess_bulk", "min_ess_tail"]


@pytest.mark.parametrize("metric", LOWER_IS_BETTER + HIGHER_IS_BETTER + ["max_rhat", "test_loglik"])
def test_each_metric_made_worse_is_flagged(metric):
    if metric == "max_rhat":  # R-hat: 1 is perfect; worse is further above 1
        base, worse, better = [1.10, 1.12, 1.11, 1.13], [1.5, 1.6, 1.55, 1.65], [1.01, 1.011, 1.012, 1.01]
    elif metric == "test_loglik":  # nats, higher is better
        base = [-1.30, -1.31, -1.29, -1.30]
        worse, better = [v - 1.0 for v in base], [v + 0.2 for v in base]
    elif metric in HIGHER_IS_BETTER:
        base = [100.0, 110.0, 105.0, 95.0]
        worse, better = [v / 5 for v in base], [v * 5 for v in base]
    else:
        base = KL
        worse, better = [v * 5 for v in base], [v / 5 for v in base]
    assert verdict(base, worse, metric)["verdict"] == "REGRESSION"
    assert verdict(base, better, metric)["verdict"] == "ok"


def test_every_rule_has_its_meaning_tested():
    ruled = {n for n in check.rules() if n != "param_error[name]"} | {"param_error[a]"}
    assert ruled == set(LOWER_IS_BETTER + HIGHER_IS_BETTER + ["max_rhat", "test_loglik"])
    assert check.rule("param_error[z]") is not None and check.rule("ebm_weight[0]") is None


WIDE = [0.001, 0.1, 0.01, 1.0]  # seeds 1000x apart: no tolerance below the cap can hold them


@pytest.mark.parametrize("now, flagged", [([5.0] * 4, True), ([2.5] * 4, False), ([0.9, 0.01, 2.0, 0.5], False)])
def test_a_metric_with_a_wide_baseline_is_checked_against_its_worst_seed(now, flagged):
    """The worst baseline seed is 1.0 (z = log 1.001); the cap is a factor 3: 5.0 is beyond, 2.5 is not."""
    row = verdict(WIDE, now)
    assert row["check"] == "range" and row["tolerance"] == pytest.approx(math.log(3))
    assert row["worse_by"] == pytest.approx(np.mean(np.log(np.array(now) + 1e-3)) - math.log(1.001))
    assert (row["verdict"] == "REGRESSION (beyond the baseline's worst seed)") == flagged


def test_unusable_baselines_are_not_checked_with_their_reason():
    # an improper model's KL is no density's
    row = verdict(KL, [v * 100 for v in KL], improper=[0, 1, 0, 0])
    assert row["verdict"] == "not checked: improper model in 1 of 4 seeds: not a density"
    # two seeds cannot estimate a spread
    row = verdict(KL[:2], [v * 100 for v in KL[:2]])
    assert row["verdict"].startswith("not checked: 2 finished seeds")


def test_a_model_that_becomes_improper_or_a_run_that_fails_is_a_regression():
    base = check.make_baseline(results({"kl": KL, "min_ess_bulk": [100.0] * 4}, improper=[0] * 4))
    now = check.compare(results({"kl": KL, "min_ess_bulk": [100.0] * 4}, improper=[0, 0, 1, 0]), base)
    v = now.set_index("metric")["verdict"]
    assert v["kl"] == "REGRESSION (model became improper)" and v["min_ess_bulk"] == "ok"
    now = check.compare(results({"kl": KL, "min_ess_bulk": [100.0] * 4},
                                status=["ok", "diverged", "ok", "ok"], improper=[0] * 4), base)
    assert (now["verdict"] == "REGRESSION (runs failed)").all()


def test_render_names_the_regression_and_counts_the_ungated():
    base = pd.concat([check.make_baseline(results({"kl": KL})),
                      check.make_baseline(results({"kl": WIDE}, algorithm="b")),
                      check.make_baseline(results({"kl": KL[:2]}, algorithm="c"))])
    now = pd.concat([results({"kl": [v * 4 for v in KL]}), results({"kl": WIDE}, algorithm="b"),
                     results({"kl": KL[:2]}, algorithm="c")])
    text = check.render(check.compare(now, base))
    assert "2 metrics checked against the baseline (1 by their mean, 1 by the range" in text
    assert "1 regression(s)" in text and "REGRESSION" in text
    assert "1 metrics checked by range:\n     1  seed spread too large for the mean\n" in text
    assert "1 metrics not checked:\n     1  2 finished seeds, fewer than 3" in text


# ---------------------------------------------------------------------------------------------------------
# bench baseline / bench check on hand-made results folders

def folder(path, df):
    atomic_write_csv(path / "results.csv", df.assign(cell_id="x"))
    return path


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: ") and match in err[0], err


def test_baseline_refuses_rows_of_another_suite_or_fidelity(tmp_path, capsys):
    smoke = folder(tmp_path, results({"kl": KL}, suite="toy2d", fidelity="smoke", target="two_mode"))
    base = tmp_path / "b.csv"
    argv = ["baseline", "--suite", "toy2d", "--fidelity", "quick", "--results", str(smoke), "--baseline", str(base)]
    one_line_error(capsys, argv, "holds rows of toy2d/smoke, not only toy2d/quick")
    assert not base.exists()


def test_baseline_is_not_overwritten_without_force(tmp_path, capsys, monkeypatch):
    base = tmp_path / "b.csv"
    base.write_text("committed\n")
    import bench.sweep

    monkeypatch.setattr(bench.sweep, "run_sweep", lambda *a, **k: pytest.fail("computed before refusing"))
    one_line_error(capsys, ["baseline", "--suite", "toy2d", "--baseline", str(base)], "pass --force to replace")
    assert base.read_text() == "committed\n"
    one_line_error(capsys, ["baseline", "--suite", "toy2d", "--baseline", str(tmp_path / "n.csv"), "--seeds", "2"],
                   "at least 3 seeds")


def test_baseline_written_and_read_back_by_check(tmp_path, capsys):
    res = pd.concat([results({"kl": KL, "ebm_weight[0]": [0.3] * 4}, suite="toy2d", target="two_mode"),
                     results({"kl": KL}, suite="toy2d", target="four_mode", algorithm="b")])
    (tmp_path / "r").mkdir()
    r = folder(tmp_path / "r", res)
    base = tmp_path / "b.csv"
    common = ["--suite", "toy2d", "--baseline", str(base)]
    assert main(["baseline", *common, "--results", str(r)]) == 0
    b = pd.read_csv(base)
    assert list(b.columns) == check.BASELINE_COLUMNS and set(b["metric"]) == {"kl"} and (b["check"] == "mean").all()
    assert main(["baseline", *common, "--results", str(r), "--force"]) == 0
    capsys.readouterr()
    assert main(["check", *common, "--results", str(r)]) == 0
    assert "2 metrics checked against the baseline (2 by their mean, 0 by the range of the baseline's seeds): " \
           "0 regression(s)" in capsys.readouterr().out
    worse = res.assign(value=np.where((res["metric"] == "kl") & (res["algorithm"] == "b"), res["value"] * 3,
                                      res["value"]))
    (tmp_path / "w").mkdir()
    assert main(["check", *common, "--results", str(folder(tmp_path / "w", worse))]) == 1
    out = capsys.readouterr().out
    assert "1 regression(s)" in out and "four_mode" in out


def test_check_refuses_a_baseline_of_the_old_format(tmp_path, capsys):
    old = tmp_path / "old.csv"
    old.write_text("suite,fidelity,target,algorithm,metric,mean,std,n_seeds,direction,n_ok,n_runs\n"
                   "toy2d,quick,two_mode,cd,kl,0.2,0.01,2,-1,2,2\n")
    one_line_error(capsys, ["check", "--suite", "toy2d", "--baseline", str(old), "--results", str(tmp_path)],
                   "not a baseline of this version")
