"""Tables on hand-made results with known answers: the CI of values 1, 2, 3; the paired n.s. flag; measured and
published columns in their places (published values transcribed here from the papers, independently of
bench/published.py); titles with fidelity and seeds; warnings; blank cells; improper models; terminal width;
where each cell's settings come from."""

import json
import math

import pandas as pd
import pytest

from bench import published, report, tables
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


def table1_results(fidelity="quick", settings=None):
    return results({(t, "ula_ebm"): {"logp_median_sq_error_grid": v, "logp_median_sq_error": [x / 10 for x in v]}
                    for t, v in FOUR.items()}
                   | {("rings", "cd"): {"logp_median_sq_error_grid": [0.5, 0.5, 0.5]}}, fidelity, settings=settings)


def table1(fidelity="quick", settings=None):
    res = table1_results(fidelity, settings)
    spec = next(s for s in tables.applicable_tables(res) if s["name"] == "table1_000")
    return tables.paper_table(res, spec)


def test_paper_table_puts_measured_and_published_in_their_columns():
    t = table1()
    # measured: mean ± 95 % CI over seeds
    assert t.loc["ula_ebm", "8 Gaussians, grid"] == "2 ± 2.5 (med 2)" and t.loc["ula_ebm", "rings, grid"] == \
        "4 ± 0 (med 4)"
    # the second reading of the metric in its own columns, from its own rows
    assert t.loc["ula_ebm", "8 Gaussians, samples"] == "0.2 ± 0.25 (med 0.2)"
    # published, 000 Table 1: ULA-EBM 1.86 (8 Gaussians), 5.39 (rings); flowMC-EBM 0.94, 0.40, beside the grid
    # median only: the samples' columns have no published column (000 gives one number per target)
    assert t.loc["ula_ebm", "8 Gaussians, grid [000 Table 1]"] == "1.86"
    assert t.loc["ula_ebm", "rings, grid [000 Table 1]"] == "5.39"
    assert t.loc["flowmc_ebm", "8 Gaussians, grid [000 Table 1]"] == "0.94"
    assert t.loc["flowmc_ebm", "rings, grid [000 Table 1]"] == "0.4"
    assert not [c for c in t.columns if c.endswith("samples [000 Table 1]")]
    # blank, not NaN: cd has no published numbers and did not run eight_gaussians; flowmc_ebm did not run
    assert t.loc["cd", "rings, grid [000 Table 1]"] == "" and t.loc["cd", "8 Gaussians, grid"] == ""
    assert t.loc["cd", "rings, samples"] == ""  # cd's rows hold no sample median
    assert t.loc["flowmc_ebm", "rings, grid"] == "" and t.loc["flowmc_ebm", "seeds"] == ""
    assert t.loc["ula_ebm", "seeds"] == 3 and t.loc["ula_ebm", "settings"] == "quick"
    assert "nan" not in report.render("x", t).lower()


def test_a_rows_diagnosis_is_a_note_only_where_that_row_was_measured():
    spec = next(s for s in published.PAPER_TABLES if s["name"] == "table1_000")
    assert spec["notes"]["coopflow"]
    assert not any(n.startswith("coopflow:") for n in table1().attrs["notes"])  # no CoopFlow row measured
    res = results({("eight_gaussians", "coopflow"): {"logp_median_sq_error": [4.0, 5.0, 6.0]}})
    notes = tables.paper_table(res, spec).attrs["notes"]
    assert f"coopflow: {spec['notes']['coopflow']}" in notes


def test_table3_published_columns_in_the_papers_order():
    res = results({("four_mode", "flowmc_ebm"): {"ebm_weight_mse": [1e-3, 1e-3, 1e-3]}})
    spec = next(s for s in tables.applicable_tables(res) if s["name"] == "table3_000")
    t = tables.paper_table(res, spec)
    # 000 Table 3, flowMC-EBM: init wrt E 5.19e-4, neg wrt E 3.12e-5, E wrt p* 4.29e-4
    assert [t.loc["flowmc_ebm", f"{c} [000 Table 3]"] for c in ("init wrt E", "neg wrt E", "E wrt p*")] == \
           ["0.000519", "3.12e-05", "0.000429"]
    assert t.loc["flowmc_ebm", "E wrt p*"] == "0.001 ± 0 (med 0.001)"


def test_003_fig6_table_reads_the_gmm50d_metrics_the_evaluation_writes():
    """003 Fig. 6 gives curves; the table sets the one value read from them, Algorithm 1's p_k = 0.25 (for every
    c of Fig. 6), beside the measured mode weight, and shows the KL, its estimate and the estimate's error
    under the evaluation's own metric names (a renamed metric would leave the columns blank)."""
    res = results({("gmm50d", "jarzynski[c=0.4]"): {"ebm_weight[0]": [0.24, 0.26], "kl": [0.01, 0.01],
                                                     "kl_estimate": [-0.09, -0.09], "log_z_error": [-0.1, -0.1]},
                   ("gmm50d", "pcd"): {"ebm_weight[0]": [1e-4, 1e-4], "kl": [4.0, 4.0]}},
                  "paper", suite="gmm50d", settings="paper")
    spec = next(s for s in tables.applicable_tables(res) if s["name"] == "fig6_003")
    t = tables.paper_table(res, spec)
    assert t.loc["jarzynski[c=0.4]", "p_k"].startswith("0.25 ± ")
    assert t.loc["jarzynski[c=0.4]", "p_k [003 Fig. 6]"] == "0.25"
    row = t.loc["jarzynski[c=0.4]"]
    assert row["KL estimate"] == "-0.09 ± 0" and row["log Z error"] == "-0.1 ± 0"
    assert t.loc["pcd", "p_k [003 Fig. 6]"] == "" and t.loc["pcd", "KL estimate"] == ""  # no estimate, none read
    assert t.loc["jarzynski", "p_k [003 Fig. 6]"] == "0.25" and t.loc["jarzynski", "p_k"] == ""  # not run here
    assert not t.attrs["notes"]  # paper settings beside the paper: no warning


def test_quick_numbers_beside_published_ones_are_warned_about():
    notes = table1().attrs["notes"]
    assert any(n.startswith("WARNING: measured numbers at quick settings") for n in notes)
    assert not any("WARNING" in n for n in table1("paper", "paper").attrs["notes"])
    assert any(n.startswith("extrapolated:") for n in table1("paper", "extrapolated").attrs["notes"])


def test_paper_table_footnotes_follow_the_algorithms_run():
    res = table1_results()
    spec = {**next(s for s in tables.applicable_tables(res) if s["name"] == "table1_000"),
            "notes": {"ula_ebm": "ula: why", "nt_ebm": "nt: why", "cd": "cd: why"}}
    notes = tables.paper_table(res, spec).attrs["notes"]
    assert "ula_ebm: ula: why" in notes and "nt_ebm: nt: why" not in notes  # nt_ebm published but not run: no footnote
    # a cell that diverged has no value in the table, but its row's footnote says why
    diverged = pd.DataFrame([{**res.iloc[0].to_dict(), "algorithm": "nt_ebm", "status": "diverged",
                              "metric": "diverged_at", "value": 7.0}])
    notes = tables.paper_table(pd.concat([res, diverged], ignore_index=True), spec).attrs["notes"]
    assert "nt_ebm: nt: why" in notes and "cd: cd: why" in notes


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
    assert k.loc[("four_mode", "a"), "max_rhat"] == "2 ± 2.5 (med 2)"  # not a density metric: all seeds
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


def test_settings_come_from_the_suite_data():
    """Without a settings key a quick cell is "quick" and a paper-fidelity cell "extrapolated"; a label is data."""
    toy = load_suite("toy2d")
    assert {c.settings for c in resolve_cells(toy, "quick", None, None, 1)} == {"quick"}
    paper = {(c.algorithm, c.target): c.settings for c in resolve_cells(toy, "paper", None, None, 1)}
    assert paper[("cd", "rings")] == "extrapolated"  # no settings key in its sections


def test_paper_with_deviations_is_footnoted_in_the_tables():
    """A cell labelled "paper, with deviations" carries its list into every row; the key-metrics table and the paper
    table name it and list what deviates, and the paper table still warns that it is not the paper's settings."""
    res = results({(t, "ula_ebm"): {"logp_median_sq_error": v} for t, v in FOUR.items()}, "paper",
                  settings="paper, with deviations")
    res["deviations"] = '["a fixed training set", "energy toy: a stand-in"]'
    spec = next(s for s in tables.applicable_tables(res) if s["name"] == "table1_000")
    t = tables.paper_table(res, spec)
    assert t.loc["ula_ebm", "settings"] == "paper, with deviations"
    notes = t.attrs["notes"]
    assert "ula_ebm/eight_gaussians, paper, with deviations: a fixed training set; energy toy: a stand-in" in notes
    assert any(n.startswith("WARNING: measured numbers at paper, with deviations settings") for n in notes)
    assert "ula_ebm/rings, paper, with deviations: a fixed training set; energy toy: a stand-in" in \
        tables.key_metrics(res.assign(metric="logp_median_sq_error")).attrs["notes"]


def test_bad_settings_value_is_refused(tmp_path, monkeypatch):
    from bench import suite as suite_mod

    monkeypatch.setattr(suite_mod, "SUITES_DIR", tmp_path)
    (tmp_path / "s.toml").write_text('targets = ["two_mode"]\nalgorithms = ["cd"]\n[fidelity.quick.defaults]\n'
                                     'n_iters = 3\nsettings = "papr"\n')
    with pytest.raises(BenchError, match="settings must be one of paper, paper, with deviations, extrapolated, "
                                         "quick, smoke"):
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


def test_heavy_tailed_seeds_get_the_median_beside_the_mean():
    # four seeds' KL, one 1e7 times the others (a runaway energy that stayed under the rule): the mean is that
    # seed's number, the median the typical seed's; sorted 0.01, 0.01, 0.02, 1e5 -> median 0.015
    res = results({("eight_gaussians", "coopflow"): {"kl": [0.01, 0.02, 1e5, 0.01]}})
    row = tables.summary(res).iloc[0]
    assert row["mean"] == pytest.approx(25000.01) and row["median"] == pytest.approx(0.015)
    cell = tables.key_metrics(res).loc[("eight_gaussians", "coopflow"), "kl"]
    assert cell.startswith("2.5e+04 ± ") and cell.endswith(" (med 0.015)")
    # below MIN_SEEDS_MEDIAN seeds the median is the mean (or the mean of two): not shown
    two = tables.key_metrics(results({("t", "a"): {"kl": [1.0, 3.0]}})).loc[("t", "a"), "kl"]
    assert "med" not in two and two.startswith("2 ± ")
    assert tables.fmt_cell(2.0, 0.5, median=1.0, n_seeds=3) == "2 ± 0.5 (med 1)"
    assert tables.fmt_cell(2.0, 0.5, 1, 4, median=1.0, n_seeds=3) == "2 ± 0.5 (med 1) †1/4"


def with_outcomes(res, outcome_of_seed):
    """Set the status of the given seeds; a diverged run keeps only its diverged_at row, as the runner writes it."""
    res = res.copy()
    for seed, status in outcome_of_seed.items():
        res.loc[res["seed"] == seed, "status"] = status
    gone = res[res["status"] == "diverged"].drop_duplicates(["target", "algorithm", "seed"])
    res = res[res["status"] != "diverged"]
    return pd.concat([res, gone.assign(metric="diverged_at", value=141.0)], ignore_index=True)


def test_runaway_and_diverged_runs_are_counted_not_averaged():
    kl = [0.1, 0.2, 0.3, 26636.0, 5.0]
    res = with_outcomes(results({("four_mode", "short_run"): {"kl": kl, "ebm_weight_mse": [0.01] * 5},
                                 ("four_mode", "ula_ebm"): {"kl": [1.0, 2.0, 3.0], "ebm_weight_mse": [0.1] * 3}}),
                        {3: "runaway", 4: "diverged"})
    k = tables.key_metrics(res)
    assert k.loc[("four_mode", "short_run"), "kl"] == f"0.2 ± {T_975_2 * 0.1 / math.sqrt(3):.2g} (med 0.2)"
    assert k.loc[("four_mode", "short_run"), "runs"] == "3 ok, 1 runaway, 1 diverged"
    assert k.loc[("four_mode", "ula_ebm"), "runs"] == "3 ok"
    counts = tables.status_counts(res).droplevel(["suite", "fidelity"])
    assert counts.loc[("four_mode", "short_run"), "runaway"] == 1
    assert counts.loc[("four_mode", "short_run"), "failure_rate"] == pytest.approx(2 / 5)
    # the paper table says which runs failed, per target; a row whose runs all finished says nothing
    spec = next(s for s in tables.applicable_tables(res) if s["name"] == "table3_000")
    t = tables.paper_table(res, spec)
    assert t.loc["short_run", "failed runs"] == "four_mode: 3 ok, 1 runaway, 1 diverged"
    assert t.loc["ula_ebm", "failed runs"] == ""
    assert t.loc["short_run", "E wrt p*"] == "0.01 ± 0 (med 0.01)"
    assert "failed runs" not in tables.paper_table(results({("four_mode", "a"): {"ebm_weight_mse": [0.1]}}),
                                                   spec).columns


def _protocol(n_ref: int) -> str:
    return json.dumps({"quality_extractor": "classifier-0123456789ab", "quality_n_gen": 1000,
                       "quality_n_ref": n_ref, "quality_reference_split": "test", "quality_image_shape": [1, 8, 8],
                       "quality_value_range": [-1.0, 1.0]}, sort_keys=True)


def test_sample_quality_values_of_different_protocols_are_never_compared():
    """Known answers: under one protocol the FIDs are compared (paired difference 10 exactly, the paper table's
    column filled, its protocol in a note); when one algorithm's FIDs were measured against another reference set
    they are kept apart: their own metric names, no paired difference, the paper table's column left blank with a
    note, and the protocols table says what each name stands for."""
    cells = {("digits8", "pcd"): {"fid_classifier": [10.0, 11.0, 12.0]},
             ("digits8", "jarzynski_multinomial"): {"fid_classifier": [20.0, 21.0, 22.0]}}
    same = results(cells, "quick", "cifar10").assign(protocol=_protocol(330))
    d = tables.paired_differences(same, "pcd").set_index("algorithm")
    assert d.loc["jarzynski_multinomial", "mean_diff"] == pytest.approx(10.0)
    spec = next(s for s in tables.applicable_tables(same) if s["name"] == "table1_003")
    t = tables.paper_table(same, spec)
    assert t.loc["pcd", "digits8 classifier FID"] == "11 ± 2.5 (med 11)"  # median of 10, 11, 12
    assert "digits8 fid_classifier: classifier-0123456789ab, 1000 generated vs 330 reference images of the test " \
           "split" in t.attrs["notes"]

    mixed = same.copy()
    mixed.loc[mixed["algorithm"] == "jarzynski_multinomial", "protocol"] = _protocol(1000)
    tag330, tag1000 = tables.protocol_tag(_protocol(330)), tables.protocol_tag(_protocol(1000))
    s = tables.summary(mixed).set_index(["algorithm", "metric"])
    assert s.loc[("pcd", f"fid_classifier @{tag330}"), "mean"] == 11.0
    assert s.loc[("jarzynski_multinomial", f"fid_classifier @{tag1000}"), "mean"] == 21.0
    assert "fid_classifier" not in set(s.index.get_level_values("metric"))
    assert tables.paired_differences(mixed, "pcd").empty  # nothing to pair across protocols
    t = tables.paper_table(mixed, spec)
    assert t.loc["pcd", "digits8 classifier FID"] == t.loc["jarzynski_multinomial", "digits8 classifier FID"] == ""
    assert any(n.startswith("digits8 fid_classifier: measured under 2 protocols, never compared") for n in
               t.attrs["notes"])
    p = tables.protocols_table(mixed).reset_index().set_index("protocol")
    assert p.loc[tag330, "n_reference"] == 330 and p.loc[tag1000, "n_reference"] == 1000
    # rows without a stored protocol (older results) are a protocol of their own: "unstated"
    old = same.copy()
    old.loc[old["algorithm"] == "pcd", "protocol"] = ""
    assert set(tables.summary(old)["metric"]) == {f"fid_classifier @{tag330}", "fid_classifier @unstated"}
