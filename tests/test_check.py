"""The metric regression gate: hand-made fixtures with known answers (a metric made worse by a known factor
while every run finishes is flagged, an improvement is not, each metric's better direction is the right
one, unusable baselines are excluded with their reason), the baseline command's refusals, and end to end: intact
code passes its baseline, a deliberately broken algorithm fails it; the HTML report is self-contained."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

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
    # 8 baseline seeds and 4 check seeds: 495 arrangements (3 + 3 would give 20, too few for a 5 % test)
    assert main(["baseline", *common, "--seeds", "8", "--out", str(tiny_suite / "r0")]) == 0
    b = pd.read_csv(base)
    assert {"logp_median_sq_error", "ebm_weight_mse", "kl"} <= set(b["metric"]) and (b["n_runs"] == 8).all()
    capsys.readouterr()
    assert main(["check", *common, "--out", str(tiny_suite / "r1")]) == 0  # recomputed from scratch
    assert " 0 regression(s)" in capsys.readouterr().out

    monkeypatch.setitem(algorithms.ALGORITHMS, "cd", SignFlipped)
    assert main(["check", *common, "--out", str(tiny_suite / "r2")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "logp_median_sq_error" in out
    header = next(line for line in out.splitlines() if line.split()[:3] == ["target", "algorithm", "metric"])
    for col in ["scale", "mean_base", "mean", "worse_by", "tolerance"]:
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

def results(values: dict, algorithm="a", target="t", suite="s", fidelity="quick", status=None, improper=None,
            first_seed=0):
    """{metric: [value per seed]} -> long-format rows; ``status``/``improper``: per seed."""
    n = len(next(iter(values.values())))
    status = status or ["ok"] * n
    rows = []
    for i in range(n):
        vals = dict(values)
        if improper is not None:
            vals["improper"] = [float(x) for x in improper]
        for metric, v in vals.items():
            rows.append({"suite": suite, "fidelity": fidelity, "target": target, "algorithm": algorithm,
                         "seed": first_seed + i, "metric": metric, "value": v[i], "status": status[i]})
    return pd.DataFrame(rows)


def verdict(base_values, now_values, metric="kl", **kw):
    now = kw.pop("now", None)
    base = check.make_baseline(results({metric: base_values}, **kw))
    cmp = check.compare(results({metric: now_values}, **(now or kw)), base)
    return cmp.set_index("metric").loc[metric]


def kl_values(z):
    """KL values whose z = log(KL + 1e-3) (kl's floor) are the given numbers."""
    return list(np.exp(np.asarray(z, dtype=float)) - 1e-3)


def z_kl(values):
    return np.log(np.asarray(values, dtype=float) + 1e-3)


# Eight baseline seeds whose z has mean log(0.1) and standard deviation exactly 0.2 (+-0.2 * sqrt(7/8) each).
Z8 = math.log(0.1) + 0.2 * math.sqrt(7 / 8) * np.array([1, -1] * 4)
KL8 = kl_values(Z8)
KL = [0.10, 0.12, 0.11, 0.13]


def test_the_nominal_p_is_students_pooled_two_sample_t():
    """Checked against scipy's t test (an implementation of its own): the pooled-variance test of the check's z
    against the baseline's, one-sided toward worse; a Welch test or the baseline's spread alone gives another p."""
    now = kl_values(math.log(0.1) + np.array([0.5, 0.1, 0.3, -0.2]))
    want = stats.ttest_ind(z_kl(now), Z8, equal_var=True, alternative="greater").pvalue
    row = verdict(KL8, now)
    assert row["p"] == pytest.approx(want, rel=1e-9)
    assert row["worse_by"] == pytest.approx(z_kl(now).mean() - Z8.mean())
    # higher is better: the test looks the other way
    ess = [100.0, 120, 90, 110, 105, 95, 115, 85]
    now = [80.0, 95, 70, 90]
    z = check.rule("min_ess_bulk").transform  # its declared scale (log, with the declaration's floor)
    want = stats.ttest_ind(z(now), z(ess), equal_var=True, alternative="less").pvalue
    assert verdict(ess, now, "min_ess_bulk")["p"] == pytest.approx(want, rel=1e-6)


def exact_permutation_p(base_z, now_z):
    """The exact permutation p-value of one metric, by enumerating every choice of the check's units among the
    pooled ones (495 for 8 + 4), with scipy's pooled t statistic: the known answer for a one-test run."""
    pool = np.concatenate([base_z, now_z])
    n = len(now_z)

    def stat(check_idx):
        mask = np.zeros(len(pool), bool)
        mask[list(check_idx)] = True
        return stats.ttest_ind(pool[mask], pool[~mask], equal_var=True).statistic

    observed = stat(range(len(base_z), len(pool)))
    all_t = [stat(c) for c in itertools.combinations(range(len(pool)), n)]
    return np.mean(np.array(all_t) >= observed - 1e-12)


@pytest.mark.parametrize("shift", [0.3, 0.6, 1.2])
def test_a_one_test_run_gets_the_exact_permutation_p(shift):
    """One metric, one cell, no other test: the adjusted p is the exact permutation p-value (enumerated here
    independently), up to the Monte Carlo error of 2000 rearrangements. A rule that compared the nominal p
    with alpha / M, or drew the check's units from the baseline's alone, misses it."""
    rng = np.random.default_rng(1)
    base_z = math.log(0.1) + 0.5 * rng.standard_normal(8)
    now_z = math.log(0.1) + shift + 0.5 * rng.standard_normal(4)
    exact = exact_permutation_p(base_z, now_z)
    row = verdict(kl_values(base_z), kl_values(now_z))
    mc = 3 * math.sqrt(exact * (1 - exact) / check.PERMUTATIONS) + 2 / check.PERMUTATIONS
    assert row["p_adj"] == pytest.approx(exact, abs=mc), (exact, row["p_adj"])


@pytest.mark.parametrize("factor, flagged", [(3.0, True), (1.5, True), (1.2, False), (1 / 3, False),
                                             (1 / 100, False)])
def test_worse_by_a_known_factor_is_flagged_improvement_is_not(factor, flagged):
    """The 4 check seeds are the baseline's first 4 times a factor: all 4 worse than every baseline seed is the
    most extreme of the 495 arrangements (p_adj about 1/495); 1.2 is below the 1.25 resolution."""
    row = verdict(KL8, [v * factor for v in KL8[:4]])
    assert row["worse_by"] == pytest.approx(z_kl(np.array(KL8[:4]) * factor).mean() - Z8.mean())
    assert (row["verdict"] == "REGRESSION") == flagged, row
    if factor >= 1.5:  # every check seed beyond every baseline seed
        assert row["p_adj"] < 0.01


def test_an_outlying_check_seed_of_the_same_distribution_is_not_a_regression():
    """Three check seeds like the baseline's and one 20 times worse (a heavy tail: unchanged code, a new seed):
    the pooled spread takes the outlier in, T = 1.46, no alarm. The previous rule (the baseline's spread alone:
    tolerance 0.232 against a shift of 0.75) flagged it; so would any rule that ignores the check's spread."""
    z_now = math.log(0.1) + np.array([0.0, 0.0, 0.0, math.log(20)])
    row = verdict(KL8, kl_values(z_now))
    assert row["worse_by"] == pytest.approx(math.log(20) / 4)
    assert row["worse_by"] > 1.895 * 0.2 * math.sqrt(3 / 8)  # beyond the previous rule's tolerance
    assert row["verdict"] == "ok" and row["p"] > 0.05


def cell_values(rng, kind, n):
    """n seeds of one metric of unchanged code: normal, few-valued (which mode the model weighs) or
    heavy-tailed (lognormal with sigma 2): z is far from normal in the last two."""
    if kind == "normal":
        return kl_values(math.log(0.1) + 0.3 * rng.standard_normal(n))
    if kind == "two_valued":
        return list(np.where(rng.random(n) < 0.3, 0.5, 0.01))
    return list(0.1 * np.exp(2 * rng.standard_normal(n)))


def suite_run(rng, seeds, kinds, fail_rate=0.0):
    """One results set of unchanged code: a cell per kind (two metrics each), the given seeds; failures at
    fail_rate per run."""
    parts = []
    for i, kind in enumerate(kinds):
        n = len(seeds)
        status = list(np.where(rng.random(n) < fail_rate, "diverged", "ok"))
        parts.append(results({"kl": cell_values(rng, kind, n), "ebm_weight_mse": cell_values(rng, kind, n)},
                             algorithm=f"a{i}", status=status, first_seed=seeds[0]))
    return pd.concat(parts, ignore_index=True)


def test_the_false_alarm_rate_per_run_is_at_most_alpha_whatever_the_distributions():
    """100 runs of unchanged code (new seeds each) on 12 cells of few-valued and heavy-tailed metrics with random
    failures: at most about 5 % of the runs alarm (binomial: 5 % + 3 sd = 11.5 %). The previous rule
    (Bonferroni-corrected t on the baseline's spread, 'any failure where the baseline had none') alarms in most
    runs of the same data; a rule that never alarms passes this test and fails the ones above and below."""
    rng = np.random.default_rng(7)
    kinds = ["normal", "two_valued", "heavy"] * 4
    runs = 0
    for _ in range(100):
        base = check.make_baseline(suite_run(rng, list(range(8)), kinds, fail_rate=0.05))
        cmp = check.compare(suite_run(rng, list(range(8, 12)), kinds, fail_rate=0.05), base, permutations=400)
        runs += bool(len(check.regressions(cmp)))
    assert runs <= 11


def test_a_worsened_cell_among_many_unchanged_ones_is_flagged_and_only_it():
    """A run of 20 cells; one cell's KL is 5 times worse in every check seed: only that metric alarms, with the
    family of the whole run (40 value tests and the counts)."""
    rng = np.random.default_rng(3)
    kinds = ["normal"] * 20
    base = check.make_baseline(suite_run(rng, list(range(8)), kinds))
    now = suite_run(rng, list(range(8, 12)), kinds)
    worse = (now["algorithm"] == "a7") & (now["metric"] == "kl")
    now.loc[worse, "value"] *= 5
    bad = check.regressions(check.compare(now, base))
    assert bad[["algorithm", "metric"]].values.tolist() == [["a7", "kl"]]


@pytest.mark.parametrize("now, seeds", [([0.10, 0.12, 0.11, math.inf], "1 of 4"), ([0.10, 0.12, math.nan, math.nan],
                                                                                      "2 of 4")])
def test_a_value_finite_in_the_baseline_and_not_now_is_a_regression(now, seeds):
    row = verdict(KL8, now)
    assert row["verdict"] == f"REGRESSION (not finite in {seeds} seeds; finite in the baseline)"


def test_a_metric_already_non_finite_in_the_baseline_is_compared_over_its_finite_seeds():
    base = KL8[:7] + [math.inf]
    base_row = check.make_baseline(results({"kl": base})).iloc[0]
    assert base_row["n_seeds"] == 7 and base_row["n_nonfinite"] == 1
    assert base_row["values"].split()[-1] == "inf"
    assert verdict(base, KL8[:3] + [math.inf])["verdict"] == "ok"
    assert verdict(base, [5 * v for v in KL8[:3]] + [math.inf])["verdict"] == "REGRESSION"
    assert verdict(base, [math.nan] * 4)["verdict"].startswith("REGRESSION (not finite in 4 of 4")


# the meaning of each checked metric, written independently of the declarations' gates: which way is worse
LOWER_IS_BETTER = ["kl", "ebm_weight_mse", "neg_weight_mse", "logp_median_sq_error", "logp_median_sq_error_grid",
                   "mass_outside_box",
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
    base = base * 2  # 8 baseline seeds
    assert verdict(base, worse, metric)["verdict"] == "REGRESSION"
    assert verdict(base, better, metric)["verdict"] == "ok"


def test_every_rule_has_its_meaning_tested():
    ruled = {n for n in check.rules() if n != "param_error[name]"} | {"param_error[a]"}
    assert ruled == set(LOWER_IS_BETTER + HIGHER_IS_BETTER + ["max_rhat", "test_loglik"])
    assert check.rule("param_error[z]") is not None and check.rule("ebm_weight[0]") is None


WIDE = [0.001, 0.1, 0.01, 1.0] * 2  # seeds 1000x apart (seeds 0-3 and 4-7 alike)


def test_a_metric_with_a_wide_baseline_is_said_to_be_coarse_and_a_large_change_still_caught():
    row = verdict(WIDE, WIDE[:4])
    assert row["reason"].startswith("coarse: seed spread too large to resolve x3") and row["verdict"] == "ok"
    assert verdict(WIDE, [v * 1e4 for v in WIDE[:4]])["verdict"] == "REGRESSION"
    assert verdict(WIDE, [v * 3 for v in WIDE[:4]])["verdict"] == "ok"


def test_the_coarse_label_is_the_one_sided_t_tolerance_of_the_baselines_spread():
    """``tolerance`` (what labels a baseline metric coarse) on known numbers: t_{n_b - 1}(1 - alpha / family) times
    the spread times sqrt(1/n_b + 1/n), floored at the rule's resolution. A spread of 0.5 nats with 8 baseline and
    4 check seeds gives 1.8946 x 0.5 x sqrt(3/8) = 0.5801; a zero spread gives the floor; a family of 10 tests takes
    the 99.5 % quantile."""
    assert check.tolerance(0.5, 8, 4, 0.1, family=1) == pytest.approx(1.894579 * 0.5 * math.sqrt(3 / 8), rel=1e-5)
    assert check.tolerance(0.0, 8, 4, 0.1, family=1) == 0.1
    assert check.tolerance(0.01, 8, 4, 0.1, family=1) == 0.1  # below the resolution
    assert check.quantile(8, 10) == pytest.approx(stats.t.ppf(0.995, 7))
    # the label's boundary: the spread at which the tolerance reaches the cap log 3 on the log scale
    s_cap = math.log(3) / (stats.t.ppf(0.95, 7) * math.sqrt(3 / 8))
    assert check.tolerance(0.99 * s_cap, 8, 4, 0.2, 1) < math.log(3) < check.tolerance(1.01 * s_cap, 8, 4, 0.2, 1)


def test_unusable_baselines_are_not_checked_with_their_reason():
    # an improper model's KL is no density's
    row = verdict(KL8, [v * 100 for v in KL8[:4]], improper=[0, 1] + [0] * 6, now={"improper": [0] * 4})
    assert row["verdict"] == "not checked: improper model in 1 of 8 seeds: not a density"
    # two seeds cannot estimate a spread
    row = verdict(KL[:2], [v * 100 for v in KL[:2]])
    assert row["verdict"].startswith("not checked: 2 finite seeds")


def counts_verdicts(base_flags, now_flags, kind):
    """Verdicts of kl (a density metric) and min_ess_bulk when runs fail (kind 'status') or models are improper
    (kind 'improper'): flags per seed, 1 = failed / improper."""
    def res(flags, values):
        kw = {"status": ["diverged" if f else "ok" for f in flags]} if kind == "status" else {"improper": flags}
        return results({"kl": values[: len(flags)], "min_ess_bulk": [100.0, 104.0, 98.0, 101.0] * 2}, **kw)

    base = check.make_baseline(res(base_flags, KL8))
    return check.compare(res(now_flags, KL8[:4]), base).set_index("metric")["verdict"]


@pytest.mark.parametrize("kind, label, only_density", [("status", "runs failed", False),
                                                       ("improper", "model became improper", True)])
def test_failed_runs_and_improper_models_are_counted_against_the_baselines_rate(kind, label, only_density):
    """Fisher's exact test per cell: 4 of 4 where the baseline's 8 had none is p = 1/495 (flagged); 1 of 4 is
    p = 4/12 (not: at quick settings some cells fail or leave improper models at random, and 'any failure where
    the baseline had none' alarmed in 39 of 70 seed splits of toy2d quick); 4 of 4 where the baseline had 6 of
    8 is p = C(10, 4) / C(12, 4) = 0.42 (not); 4 of 4 where it had 1 of 8 is p = C(5, 4) / 495 = 0.010 (flagged)."""
    v = counts_verdicts([0] * 8, [1] * 4, kind)
    assert v["kl"] == f"REGRESSION ({label})"
    assert v["min_ess_bulk"] == ("ok" if only_density else f"REGRESSION ({label})")
    assert (counts_verdicts([0] * 8, [0, 1, 0, 0], kind) == "ok").all()
    assert not counts_verdicts([1] * 6 + [0] * 2, [1] * 4, kind).str.startswith("REGRESSION").any()
    assert counts_verdicts([1] + [0] * 7, [1] * 4, kind)["min_ess_bulk" if not only_density else "min_ess_bulk"] \
        == ("ok" if only_density else f"REGRESSION ({label})")
    if only_density:  # the baseline's improper seed leaves its KL unchecked; the count is still tested
        assert counts_verdicts([1] + [0] * 7, [1] * 4, kind)["kl"] == f"REGRESSION ({label})"


def test_a_cell_without_any_run_now_is_a_regression():
    base = check.make_baseline(pd.concat([results({"kl": KL8}), results({"kl": KL8}, algorithm="b")]))
    v = check.compare(results({"kl": KL8[:4]}), base).set_index("algorithm")["verdict"]
    assert v.to_dict() == {"a": "ok", "b": "REGRESSION (runs failed)"}


def test_the_verdicts_are_reproducible():
    rng = np.random.default_rng(5)
    kinds = ["heavy", "two_valued"] * 3
    base = check.make_baseline(suite_run(rng, list(range(8)), kinds))
    now = suite_run(rng, list(range(8, 12)), kinds)
    a, b = check.compare(now, base), check.compare(now, base)
    pd.testing.assert_frame_equal(a, b)


def test_false_alarms_are_counted_over_every_split_of_the_seeds():
    """Seeds 0-3 have KL 0.1, seeds 4-7 KL 1.0. Of the 70 splits into 4 baseline and 4 check seeds, only the
    baseline {0-3} against the check {4-7} alarms: it is the one arrangement of 70 with all four high seeds in
    the check (p = 1/70); the next most extreme have 3 high check seeds (16 arrangements, p >= 17/70);
    constant seeds never alarm."""
    res = results({"kl": [0.1] * 4 + [1.0] * 4, "min_ess_bulk": [100.0] * 8})
    fa = check.false_alarms(res, 4, 4)
    assert (fa["splits"], fa["runs"], fa["alarms"], fa["tests"]) == (70, 1, 1, 140)
    assert fa["per_metric"] == {"kl": 1}


def test_render_names_the_regression_and_counts_the_coarse_and_the_ungated():
    base = pd.concat([check.make_baseline(results({"kl": KL8})),
                      check.make_baseline(results({"kl": WIDE}, algorithm="b")),
                      check.make_baseline(results({"kl": KL[:2]}, algorithm="c"))])
    now = pd.concat([results({"kl": [v * 4 for v in KL8[:4]]}), results({"kl": WIDE[:4]}, algorithm="b"),
                     results({"kl": KL[:2]}, algorithm="c")])
    text = check.render(check.compare(now, base))
    assert "2 metrics checked against the baseline (1 of them coarse): 1 regression(s)" in text
    assert "REGRESSION" in text and "raises any alarm with probability at most 5%" in text
    assert "1 metrics checked, coarse:\n     1  coarse: seed spread too large to resolve x3\n" in text
    assert "1 metrics not checked:\n     1  2 finite seeds, fewer than 3" in text


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
    """An 8-seed baseline: the check reads seeds 0-3 of a folder (also when it holds all 8), passes intact
    results, fails a metric made 3 times worse, and checks only the algorithms asked for."""
    res = pd.concat([results({"kl": KL8, "ebm_weight[0]": [0.3] * 8}, suite="toy2d", target="two_mode"),
                     results({"kl": KL8}, suite="toy2d", target="four_mode", algorithm="b")])
    (tmp_path / "r").mkdir()
    r = folder(tmp_path / "r", res)
    base = tmp_path / "b.csv"
    common = ["--suite", "toy2d", "--baseline", str(base)]
    assert main(["baseline", *common, "--results", str(r)]) == 0
    out = capsys.readouterr().out
    assert "bench check re-runs seeds 0-3" in out and "of 70 runs" in out
    b = pd.read_csv(base)
    assert list(b.columns) == check.BASELINE_COLUMNS and set(b["metric"]) == {"kl"} and (b["check"] == "mean").all()
    assert (b["n_seeds"] == 8).all() and (b["n_check"] == 4).all()
    assert main(["baseline", *common, "--results", str(r), "--force"]) == 0
    capsys.readouterr()
    assert main(["check", *common, "--results", str(r)]) == 0
    assert "2 metrics checked against the baseline (0 of them coarse): 0 regression(s)" in capsys.readouterr().out
    worse = res.assign(value=np.where((res["metric"] == "kl") & (res["algorithm"] == "b"), res["value"] * 3,
                                      res["value"]))
    (tmp_path / "w").mkdir()
    w = folder(tmp_path / "w", worse)
    assert main(["check", *common, "--results", str(w)]) == 1
    out = capsys.readouterr().out
    assert "1 regression(s)" in out and "four_mode" in out
    # only algorithm "a" checked (its cells pass); the family is the cells checked
    assert main(["check", *common, "--results", str(w), "--algorithms", "a"]) == 0
    assert "1 metrics checked" in capsys.readouterr().out
    one_line_error(capsys, ["check", *common, "--results", str(w), "--algorithms", "zz"], "--algorithms: zz not in")


# a baseline as the previous version wrote it: statistics only, no seed's value (a permutation test needs them)
PREVIOUS = ("suite,fidelity,target,algorithm,metric,direction,scale,n_seeds,mean,std,z_mean,z_std,check,reason,n_ok,"
            "n_runs,n_improper,n_nonfinite,n_check\n"
            "toy2d,quick,two_mode,a,kl,-1,log,8,0.11,0.01,-2.2,0.1,mean,,8,8,0,0,4\n")


def test_a_baseline_without_the_seeds_values_is_refused_with_the_way_to_remake_it(tmp_path, capsys):
    old = tmp_path / "old.csv"
    old.write_text(PREVIOUS)
    one_line_error(capsys, ["check", "--suite", "toy2d", "--baseline", str(old), "--results", str(tmp_path)],
                   "missing columns: seeds, runs, values); make a new one with 'python -m bench baseline' (with "
                   "--results DIR")


def test_check_refuses_a_baseline_of_an_older_format(tmp_path, capsys):
    old = tmp_path / "old.csv"
    old.write_text("suite,fidelity,target,algorithm,metric,mean,std,n_seeds,direction,n_ok,n_runs\n"
                   "toy2d,quick,two_mode,cd,kl,0.2,0.01,2,-1,2,2\n")
    one_line_error(capsys, ["check", "--suite", "toy2d", "--baseline", str(old), "--results", str(tmp_path)],
                   "not a baseline of this version")


def test_a_leak_below_the_improper_threshold_is_not_a_regression():
    """mass_outside_box is gated above LEAK_TOL = 0.01 (its floor): one seed leaking 0.16 % of the mass passes
    (on toy2d quick's ULA-EBM it alarmed in half the seed splits with a floor of 1e-3); 5 % in every seed fails."""
    base = [1e-6, 3e-6, 1e-5, 2e-6, 5e-7, 1e-6, 4e-6, 8e-6]
    assert verdict(base, [1e-6, 2e-6, 1.6e-3, 3e-6], "mass_outside_box")["verdict"] == "ok"
    assert verdict(base, [0.05] * 4, "mass_outside_box")["verdict"] == "REGRESSION"


def test_a_metric_added_after_the_baseline_is_not_checked_until_the_baseline_holds_it():
    """A new metric (logp_median_sq_error_grid was added after the committed toy2d baseline) is reported by the
    check's runs but absent from the baseline: it is neither a regression nor compared, whatever its values; the
    baseline's own metrics are still checked (a worsened kl beside it still alarms)."""
    base = check.make_baseline(results({"kl": KL8}))
    now = results({"kl": KL8[:4], "logp_median_sq_error_grid": [1e6, 1e6, 1e6, 1e6]})
    cmp = check.compare(now, base)
    assert list(cmp["metric"]) == ["kl"] and not len(check.regressions(cmp))
    worse = results({"kl": [5 * v for v in KL8[:4]], "logp_median_sq_error_grid": [1.0] * 4})
    assert check.regressions(check.compare(worse, base))["metric"].tolist() == ["kl"]


def test_the_adjusted_p_is_never_below_one_over_the_rearrangements_plus_one():
    """p_adj = (1 + rearrangements at least as extreme) / (B + 1) (the observed arrangement counts as one of them):
    with B = 19, a worsening beyond every rearrangement gets exactly 1/20 = alpha, never 0, and is still flagged."""
    base = check.make_baseline(results({"kl": KL8}))
    row = check.compare(results({"kl": [v * 3 for v in KL8[:4]]}), base, permutations=19).iloc[0]
    assert row["p_adj"] == 1 / 20 and row["verdict"] == "REGRESSION"


@pytest.mark.parametrize("permutations", [19, 99])
def test_the_tolerance_and_critical_p_say_exactly_what_is_flagged(permutations):
    """16 cells worsened by factors 1 to 2.5 (8 baseline and 4 check seeds each, spread 0.2 nats): a nominal p
    below ``critical_p`` is exactly an adjusted p at most alpha, and a difference beyond ``tolerance`` exactly a
    REGRESSION; the threshold's rank off by one (the second smallest rearranged minimum) breaks both."""
    rng = np.random.default_rng(7)
    base, now = [], []
    for i, f in enumerate(np.geomspace(1.0, 2.5, 16)):
        base.append(results({"kl": kl_values(math.log(0.1) + 0.2 * rng.standard_normal(8))}, algorithm=f"a{i:02d}"))
        now.append(results({"kl": kl_values(math.log(0.1 * f) + 0.2 * rng.standard_normal(4))},
                           algorithm=f"a{i:02d}"))
    cmp = check.compare(pd.concat(now), check.make_baseline(pd.concat(base)), permutations=permutations)
    flagged = cmp["verdict"] == "REGRESSION"
    assert 3 <= flagged.sum() <= 13  # both kinds of rows are there
    assert ((cmp["p"] < cmp.attrs["critical_p"]) == (cmp["p_adj"] <= check.ALPHA)).all()
    assert ((cmp["worse_by"] > cmp["tolerance"]) == flagged).all()


def test_a_consistent_change_below_the_metrics_resolution_is_not_a_regression():
    """Every check seed 10 % worse than every baseline seed (spread 0.001 nats): the most extreme arrangement
    (p_adj 1/400 or so), but a 10 % change of a KL is below its resolution (x1.25): not flagged."""
    tight = kl_values(math.log(0.1) + 0.001 * np.array([1, -1] * 4))
    row = verdict(tight, [v * 1.1 for v in tight[:4]])
    assert row["p_adj"] < 0.01 and row["worse_by"] < check.rule("kl").min_tol
    assert row["verdict"] == "ok"


def test_the_density_value_of_an_improper_model_is_left_out_of_the_value_test():
    """One of 4 check seeds improper with a KL of 1,000 (a model that is no density has no KL): its count is
    Fisher's test's business (1 of 4: not flagged), and the value test runs on the 3 proper seeds: ok."""
    base = check.make_baseline(results({"kl": KL8}, improper=[0] * 8))
    now = results({"kl": [*KL8[:3], 1000.0]}, improper=[0, 0, 0, 1])
    row = check.compare(now, base).set_index("metric").loc["kl"]
    assert row["worse_by"] == pytest.approx(z_kl(KL8[:3]).mean() - Z8.mean())
    assert row["verdict"] == "ok"


def test_metrics_that_never_move_do_not_dilute_the_others():
    """Six metrics constant up to 1e-9 (spread far below their floor) beside a KL worsened by 0.35 nats: the KL's
    adjusted p is what it is alone (the constant metrics' t is floored to nothing), so it is still flagged. A
    spread without the floor makes their t scale-free noise, six more tests in the family, and the KL is missed."""
    others = ["ebm_weight_mse", "neg_weight_mse", "logp_median_sq_error", "mass_outside_box", "min_ess_bulk",
              "min_ess_tail"]
    rng = np.random.default_rng(0)
    now_kl = kl_values(Z8[:4] + 0.35)
    base = check.make_baseline(results({"kl": KL8, **{m: list(0.5 + 1e-9 * rng.standard_normal(8)) for m in others}}))
    now = results({"kl": now_kl, **{m: list(0.5 + 1e-9 * rng.standard_normal(4)) for m in others}})
    row = check.compare(now, base).set_index("metric").loc["kl"]
    alone = verdict(KL8, now_kl)
    assert row["p_adj"] == alone["p_adj"] < check.ALPHA and row["verdict"] == "REGRESSION"


def test_a_metric_the_runs_no_longer_record_is_a_regression():
    base = check.make_baseline(results({"kl": KL8, "min_ess_bulk": [100.0] * 8}))
    v = check.compare(results({"min_ess_bulk": [100.0] * 4}), base).set_index("metric")["verdict"]
    assert v.to_dict() == {"kl": "REGRESSION (metric missing)", "min_ess_bulk": "ok"}
