"""Tables on hand-made results with known answers: the CI of values 1, 2, 3; the paired n.s. flag; measured and
published columns in their places (published values transcribed here from the papers, independently of
bench/published.py); titles with fidelity and seeds; warnings; blank cells; improper models; terminal width;
where each cell's settings come from."""

import math

import pandas as pd
import pytest

from bench import report, tables
from bench.errors import BenchError
from bench.suite import load_suite, resolve_cells
from metrics.catalogue import headline_labels

T_975_2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom


def results(cells, fidelity="quick", suite="toy2d", settings=None):
    """cells: {(target, algorithm): {metric: [value per seed]}} -> long-format rows."""
    rows = []
    for (target, algorithm), metrics in cells.items():
        for metric, values in metrics.items():
            for seed, v in enumerate(values):
                rows.append({"suite": suite, "fidelity": fidelity, "target": target, "algorithm": algorithm,
                             "seed": seed, "metric": metric, "value": v, "status": "ok",
                             **({"settings": settings} if settings else {})})
    return pd.DataFrame(rows)


def test_ci_of_one_two_three():
    s = tables.summary(results({("t", "a"): {"m": [1.0, 2.0, 3.0]}}))
    row = s.iloc[0]
    assert row["mean"] == 2.0 and row["std"] == 1.0 and row["n_seeds"] == 3
    assert row["ci95"] == pytest.approx(T_975_2 / math.sqrt(3))
    assert tables.fmt_cell(row["mean"], row["ci95"]) == "2 ± 2.5"
    assert math.isnan(tables.ci95_halfwidth(1.0, 1))


def test_paired_flag_marks_only_the_ci_that_contains_zero():
    ref = [1.0, 2.0, 3.0]
    far = [r + d for r, d in zip(ref, [1.0, 1.1, 0.9], strict=True)]
    near = [r + d for r, d in zip(ref, [1.0, -1.0, 0.5], strict=True)]
    res = results({("t", "ref"): {"kl": ref}, ("t", "far"): {"kl": far}, ("t", "near"): {"kl": near}})
    d = tables.paired_differences(res, "ref").set_index("algorithm")
    assert d.loc["far", "mean_diff"] == pytest.approx(1.0)
    assert d.loc["far", "ci95"] == pytest.approx(T_975_2 * 0.1 / math.sqrt(3))
    assert d.loc["far", "flag"] == "" and d.loc["near", "flag"] == "n.s."


FOUR = {"eight_gaussians": [1.0, 2.0, 3.0], "rings": [4.0, 4.0, 4.0]}


def table1(fidelity="quick", settings=None):
    res = results({(t, "ula_ebm"): {"logp_median_sq_error": v} for t, v in FOUR.items()}
                  | {("rings", "cd"): {"logp_median_sq_error": [0.5, 0.5, 0.5]}}, fidelity, settings=settings)
    spec = next(s for s in tables.applicable_tables(res) if s["name"] == "table1_000")
    return tables.paper_table(res, spec)


def test_paper_table_puts_measured_and_published_in_their_columns():
    t = table1()
    # measured: mean ± 95 % CI over seeds
    assert t.loc["ula_ebm", "eight_gaussians"] == "2 ± 2.5" and t.loc["ula_ebm", "rings"] == "4 ± 0"
    # published, 000 Table 1: ULA-EBM 1.86 (8 Gaussians), 5.39 (rings); flowMC-EBM 0.94, 0.40
    assert t.loc["ula_ebm", "eight_gaussians [000 Table 1]"] == "1.86"
    assert t.loc["ula_ebm", "rings [000 Table 1]"] == "5.39"
    assert t.loc["flowmc_ebm", "eight_gaussians [000 Table 1]"] == "0.94"
    assert t.loc["flowmc_ebm", "rings [000 Table 1]"] == "0.4"
    # blank, not NaN: cd has no published numbers and did not run eight_gaussians; flowmc_ebm did not run
    assert t.loc["cd", "rings [000 Table 1]"] == "" and t.loc["cd", "eight_gaussians"] == ""
    assert t.loc["flowmc_ebm", "rings"] == "" and t.loc["flowmc_ebm", "seeds"] == ""
    assert t.loc["ula_ebm", "seeds"] == 3 and t.loc["ula_ebm", "settings"] == "quick"
    assert "nan" not in report.render("x", t).lower()


def test_table3_published_columns_in_the_papers_order():
    res = results({("four_mode", "flowmc_ebm"): {"ebm_weight_mse": [1e-3, 1e-3, 1e-3]}})
    spec = next(s for s in tables.applicable_tables(res) if s["name"] == "table3_000")
    t = tables.paper_table(res, spec)
    # 000 Table 3, flowMC-EBM: init wrt E 5.19e-4, neg wrt E 3.12e-5, E wrt p* 4.29e-4
    assert [t.loc["flowmc_ebm", f"{c} [000 Table 3]"] for c in ("init wrt E", "neg wrt E", "E wrt p*")] == \
           ["0.000519", "3.12e-05", "0.000429"]
    assert t.loc["flowmc_ebm", "E wrt p*"] == "0.001 ± 0"


def test_quick_numbers_beside_published_ones_are_warned_about():
    notes = table1().attrs["notes"]
    assert any(n.startswith("WARNING: measured numbers at quick settings") for n in notes)
    assert not any("WARNING" in n for n in table1("paper", "paper").attrs["notes"])
    assert any(n.startswith("extrapolated:") for n in table1("paper", "extrapolated").attrs["notes"])


def test_titles_state_fidelity_and_seeds():
    res = results({("rings", "ula_ebm"): {"logp_median_sq_error": [1.0, 2.0, 3.0]}})
    titles = {name: title for name, title, _ in report.sections(res)}
    assert "Measured: toy2d, quick fidelity, 3 seeds" in titles["table1_000"]
    assert "toy2d, quick fidelity, 3 seeds" in titles["key_metrics"]
    assert tables.describe(pd.concat([res, results({("t", "b"): {"kl": [1.0]}})])) == \
           "toy2d, quick fidelity, 1-3 seeds"


def test_improper_models_are_marked_not_averaged_as_densities():
    res = results({("four_mode", "a"): {"kl": [0.1, 100.0, 0.3], "improper": [0.0, 1.0, 0.0],
                                        "mass_outside_box": [0.0, 0.4, 0.0], "max_rhat": [1.0, 2.0, 3.0]},
                   ("four_mode", "b"): {"kl": [5.0, 6.0, 7.0], "improper": [1.0, 1.0, 1.0],
                                        "mass_outside_box": [0.5, 0.5, 0.5]}})
    k = tables.key_metrics(res)
    assert k.loc[("four_mode", "a"), "kl"].startswith("0.2 ± ") and k.loc[("four_mode", "a"), "kl"].endswith("†1/3")
    assert k.loc[("four_mode", "b"), "kl"] == "improper †3/3"
    assert k.loc[("four_mode", "a"), "max_rhat"] == "2 ± 2.5"  # not a density metric: all seeds
    assert k.loc[("four_mode", "a"), "leak"] == "0.13" and k.loc[("four_mode", "b"), "leak"] == "0.5"
    assert tables.IMPROPER_NOTE in k.attrs["notes"]
    assert tables.status_counts(res)["improper"].tolist() == [1, 3]
    # older results without the metric: nothing marked, nothing breaks
    old = tables.key_metrics(results({("four_mode", "a"): {"kl": [0.1, 0.2, 0.3]}}))
    assert "†" not in old.loc[("four_mode", "a"), "kl"] and "leak" not in old.columns


def test_deterministic_rhat_has_its_own_column():
    k = tables.key_metrics(results({("t", "coopflow"): {"max_rhat_deterministic": [1.5, 1.5]}}))
    assert "rhat_det" in k.columns and "max_rhat" not in k.columns
    assert any("not mixing" in n for n in k.attrs["notes"])


def test_tables_fit_a_terminal():
    metrics = {m: [0.123456, 0.234567, 0.345678] for m in headline_labels()}
    res = results({(t, a): metrics for t in ("eight_gaussians", "four_mode") for a in ("ula_ebm", "flowmc_ebm")})
    for name, title, df in report.sections(res):
        text = report.render(title, df)
        assert max(len(line) for line in text.splitlines()) <= report.WIDTH, name


def test_settings_source_is_suite_data():
    toy = load_suite("toy2d")
    paper = {(c.algorithm, c.target): c.settings for c in resolve_cells(toy, "paper", None, None, 1)}
    assert paper[("ula_ebm", "two_mode")] == paper[("flowmc_ebm", "two_mode")] == "paper"  # 000 App. C.2
    assert paper[("nt_ebm", "rings")] == paper[("coopflow", "four_mode")] == "paper"  # 000 Tables 3-5
    assert paper[("coopflow", "two_mode")] == paper[("cd", "rings")] == paper[("jarzynski", "four_mode")] == \
           "extrapolated"
    assert {c.settings for c in resolve_cells(toy, "quick", None, None, 1)} == {"quick"}
    gmm = {c.algorithm: c.settings for c in resolve_cells(load_suite("gmm50d"), "paper", None, None, 1)}
    assert gmm["jarzynski"] == gmm["pcd"] == gmm["jarzynski[c=0.4]"] == "paper"
    assert gmm["jarzynski[unweighted]"] == "extrapolated"
    sa = {c.algorithm: c.settings for c in resolve_cells(load_suite("selfadv2d"), "paper", None, None, 1)}
    assert sa["noise_free_ode"] == sa["ode_flow_ml"] == "paper" and sa["self_adversarial"] == "extrapolated"


def test_bad_settings_value_is_refused(tmp_path, monkeypatch):
    from bench import suite as suite_mod

    monkeypatch.setattr(suite_mod, "SUITES_DIR", tmp_path)
    (tmp_path / "s.toml").write_text('targets = ["two_mode"]\nalgorithms = ["cd"]\n[fidelity.quick.defaults]\n'
                                     'n_iters = 3\nsettings = "papr"\n')
    with pytest.raises(BenchError, match="settings must be one of paper, extrapolated, quick, smoke"):
        resolve_cells(load_suite("s"), "quick")


def test_weights_table_means_over_proper_seeds_beside_the_truth():
    """Known answers: the mean weight per mode over the proper seeds, 'k/n' improper marks, the true weights as
    their own row, and no row for a cell without weights (it diverged) even when another cell is improper
    (a pivot over all target x algorithm pairs once put a row there and broke the 'improper' column)."""
    w0 = [0.1, 0.9, 0.3]  # the improper second seed's 0.9 must not enter the mean
    res = results({("two_mode", "a"): {"ebm_weight[0]": [0.6, 0.8], "ebm_weight[1]": [0.4, 0.2]},
                   ("four_mode", "a"): {"ebm_weight[0]": w0, **{f"ebm_weight[{k}]": [0.3] * 3 for k in (1, 2, 3)},
                                        "improper": [0.0, 1.0, 0.0]},
                   ("four_mode", "b"): {f"ebm_weight[{k}]": [0.1 * (k + 1)] * 2 for k in range(4)},
                   ("two_mode", "b"): {"kl": [1.0, 2.0]}})  # diverged before any weight was measured
    w = tables.weights_table(res, {"two_mode": [2 / 3, 1 / 3], "four_mode": [0.25] * 4})
    assert list(w.index) == [("four_mode", "a"), ("four_mode", "b"), ("four_mode", "p* (true)"),
                             ("two_mode", "a"), ("two_mode", "p* (true)")]
    assert w.loc[("four_mode", "a"), "w0"] == "0.2" and w.loc[("four_mode", "a"), "improper"] == "1/3"
    assert [w.loc[("four_mode", "b"), f"w{k}"] for k in range(4)] == ["0.1", "0.2", "0.3", "0.4"]
    assert w.loc[("four_mode", "b"), "improper"] == ""
    assert (w.loc[("two_mode", "a"), "w0"], w.loc[("two_mode", "a"), "w1"]) == ("0.7", "0.3")
    assert w.loc[("two_mode", "a"), "w2"] == ""  # fewer modes: blank, not NaN
    assert w.loc[("two_mode", "p* (true)"), "w0"] == "0.6667"
    assert tables.IMPROPER_NOTE in w.attrs["notes"]
