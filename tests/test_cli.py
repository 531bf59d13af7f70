"""The command line: bad input gives one line and exit 2 with nothing written; a tiny sweep end to end."""

import subprocess
import sys

import pandas as pd
import pytest

from bench import cli
from bench import suite as suite_mod
from bench.cli import main
from bench.store import KEY

ROOT = suite_mod.SUITES_DIR.parent.parent


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("bench: error: ")
    assert match in err[0], err[0]
    return err[0]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["run", "--suite", "toy3d"], "unknown suite 'toy3d'; valid: cifar10, digits, gmm50d, "),
        (["run", "--suite", "toy2d", "--algorithms", "ula_ebm,nope"],
         "unknown algorithm 'nope' for suite toy2d; valid: ula_ebm, cd,"),
        (["run", "--suite", "toy2d", "--targets", "moons"],
         "unknown target 'moons' for suite toy2d; valid: two_mode, "),
        (["run", "--suite", "toy2d", "--fidelity", "huge"], "unknown fidelity 'huge'"),
        (["run", "--suite", "toy2d", "--seeds", "0"], "--seeds must be at least 1"),
        (["run", "--suite", "toy2d", "--seeds", "two"], "invalid int value"),
        (["run", "--suite", "toy2d", "--device", "tpu"], "invalid --device 'tpu'"),
        (["run"], "required: --suite"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, argv, match):
    out = tmp_path / "out"
    if argv[0] == "run" and len(argv) > 1:
        argv = [*argv, "--out", str(out)]
    one_line_error(capsys, argv, match)
    assert not out.exists()


def test_cuda_requested_without_cuda(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(capsys, ["run", "--suite", "toy2d", "--device", "cuda", "--out", str(tmp_path / "o")],
                   "CUDA is not available")
    assert not (tmp_path / "o").exists()


def test_malformed_suite_files(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(suite_mod, "SUITES_DIR", tmp_path)
    (tmp_path / "broken.toml").write_text("targets = [\n")
    one_line_error(capsys, ["run", "--suite", "broken"], "broken.toml: malformed suite file")
    (tmp_path / "typo.toml").write_text(
        'targets = ["two_mode"]\nalgorithms = ["cd"]\n[fidelity.quick.defaults]\nn_iters = 3\nn_stepz = 2\n')
    one_line_error(capsys, ["run", "--suite", "typo"], "unknown parameter 'n_stepz'; valid: ")
    (tmp_path / "badtype.toml").write_text(
        'targets = ["two_mode"]\nalgorithms = ["cd"]\n[fidelity.quick.defaults]\nn_iters = "many"\n')
    one_line_error(capsys, ["run", "--suite", "badtype"], "parameter 'n_iters' expects int")
    (tmp_path / "nolen.toml").write_text('targets = ["two_mode"]\nalgorithms = ["cd"]\n[fidelity.quick]\n')
    one_line_error(capsys, ["run", "--suite", "nolen"], "set n_iters or epochs")


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["toy2d", "ula_ebm", "cd", "short_run", "two_mode", "rings", "swiss_roll", "max_rhat"]:
        assert name in out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    argv = ["run", "--suite", "toy2d", "--fidelity", "smoke", "--algorithms", "ula_ebm", "cd",
            "--targets", "two_mode,four_mode,eight_gaussians,rings", "--out", str(out), "-j", "1"]
    assert main(argv) == 0
    return out, argv


def test_smoke_sweep_writes_long_format_results(smoke_run):
    out, _ = smoke_run
    res = pd.read_csv(out / "results.csv")
    for col in [*KEY, "metric", "value", "status", "settings", "config", "code_version", "wall_time_s",
                "cpu_time_s", "grad_evals", "energy_evals", "target_version", "n_iters"]:
        assert col in res.columns
    assert len(res.drop_duplicates(KEY)) == 8
    assert (res["status"] == "ok").all()
    metrics = set(res["metric"])
    assert {"ebm_weight_mse", "logp_median_sq_error", "max_rhat", "min_ess_bulk", "neg_weight_mse_vs_ebm"} <= metrics
    assert (res["grad_evals"] > 0).all()
    traces = pd.read_csv(out / "traces.csv")
    assert {"iteration", "metric", "value"} <= set(traces.columns)
    assert len(list((out / "cells").glob("*.npz"))) == 8


def test_rerun_replaces_rows_instead_of_duplicating(smoke_run):
    out, argv = smoke_run
    before = pd.read_csv(out / "results.csv")
    assert main([*argv[:6], "ula_ebm", "--targets", "two_mode", "--out", str(out), "-j", "1", "--no-report",
                 "--force"]) == 0
    after = pd.read_csv(out / "results.csv")
    assert len(after) == len(before)
    assert after.duplicated([*KEY, "metric"]).sum() == 0


def test_tables_and_figures(smoke_run, capsys):
    out, _ = smoke_run
    assert main(["table", "--results", str(out)]) == 0
    text = capsys.readouterr().out
    assert "000 Table 1" in text and "rings, grid [000 Table 1]" in text and "5.39" in text
    assert "000 Table 3" in text and "1.24e-03" in text.replace("0.00124", "1.24e-03")
    assert (out / "tables" / "table1_000.csv").exists()
    assert main(["plot", "--results", str(out)]) == 0
    assert (out / "figures" / "densities.png").stat().st_size > 1000
    assert (out / "figures" / "weights_over_training.png").stat().st_size > 1000


def test_corrupt_results_file(capsys, tmp_path):
    (tmp_path / "results.csv").write_bytes(b"\x00\xff garbage\n1,2\n3")
    one_line_error(capsys, ["table", "--results", str(tmp_path)], "results.csv")
    one_line_error(capsys, ["table", "--results", str(tmp_path / "none")], "no results.csv")


def test_module_entry_point_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "toy2d", "--targets", "nope"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("bench: error: unknown target 'nope'")


def test_gmm50d_smoke_with_variants(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["run", "--suite", "gmm50d", "--fidelity", "smoke", "--algorithms", "jarzynski", "pcd",
            "jarzynski[c=0.4]", "jarzynski[unweighted]", "--out", str(out), "-j", "1"]
    assert main(argv) == 0
    res = pd.read_csv(out / "results.csv")
    assert set(res["algorithm"]) == {"jarzynski", "pcd", "jarzynski[c=0.4]", "jarzynski[unweighted]"}
    assert (res["status"] == "ok").all()
    m = res.pivot_table(index="algorithm", columns="metric", values="value")
    for col in ["ebm_weight[0]", "kl", "param_error[a]", "param_error[b]", "param_error[z]", "test_loglik"]:
        assert m[col].notna().all(), col
    assert m.loc["jarzynski", "kl_estimate"] == m.loc["jarzynski", "kl_estimate"]  # not NaN
    assert pd.isna(m.loc["pcd", "kl_estimate"]) and pd.isna(m.loc["jarzynski[unweighted]", "kl_estimate"])
    cfg = res[res["algorithm"] == "jarzynski[c=0.4]"]["config"].iloc[0]
    assert '"resample_c": 0.4' in cfg and '"dtype": "float64"' in cfg
    assert (out / "figures" / "training_curves.png").exists()
    assert "Headline metrics" in capsys.readouterr().out


def test_bad_variants(capsys, tmp_path, monkeypatch):
    one_line_error(capsys, ["run", "--suite", "gmm50d", "--algorithms", "jarzynski[c=9]"],
                   "unknown algorithm 'jarzynski[c=9]' for suite gmm50d; valid: jarzynski, ")
    monkeypatch.setattr(suite_mod, "SUITES_DIR", tmp_path)
    (tmp_path / "v.toml").write_text('targets = ["two_mode"]\nalgorithms = ["x"]\n[variants.x]\nalgorithm = "nope"\n'
                                     '[fidelity.quick.defaults]\nn_iters = 3\n')
    one_line_error(capsys, ["run", "--suite", "v"], "[variants.x]: 'algorithm' must be one of")
    (tmp_path / "w.toml").write_text('targets = ["two_mode"]\nalgorithms = ["pcd[a,b]"]\n[variants."pcd[a,b]"]\n'
                                     'algorithm = "pcd"\n[fidelity.quick.defaults]\nn_iters = 3\n')
    one_line_error(capsys, ["run", "--suite", "w"], "[variants.pcd[a,b]]: a variant's name may not contain ','")


def test_a_suites_default_algorithms_leave_its_variants_out_and_a_fidelitys_own_list_wins(capsys, tmp_path,
                                                                                            monkeypatch):
    from bench.suite import load_suite, resolve_cells

    eight = ["ula_ebm", "cd", "short_run", "flowmc_ebm", "nt_ebm", "nce_ebm", "coopflow", "jarzynski"]
    toy = load_suite("toy2d")
    assert "nt_ebm[ml]" in toy["algorithms"]
    for fidelity in ("smoke", "quick", "paper"):
        assert sorted({c.algorithm for c in resolve_cells(toy, fidelity, None, ["two_mode"], 1)}) == sorted(eight)
    named = resolve_cells(toy, "paper", ["nt_ebm[ml]"], ["four_mode"], 1)
    assert [c.algorithm for c in named] == ["nt_ebm[ml]"] and named[0].settings == "paper, with deviations"
    monkeypatch.setattr(suite_mod, "SUITES_DIR", tmp_path)
    (tmp_path / "d.toml").write_text('targets = ["two_mode"]\nalgorithms = ["pcd", "cd"]\ndefault_algorithms = ["cd"]\n'
                                     '[fidelity.quick]\ndefault_algorithms = ["pcd"]\n[fidelity.smoke.defaults]\n'
                                     'n_iters = 3\n[fidelity.quick.defaults]\nn_iters = 3\n')
    d = load_suite("d")
    assert [c.algorithm for c in resolve_cells(d, "smoke", None, None, 1)] == ["cd"]
    assert [c.algorithm for c in resolve_cells(d, "quick", None, None, 1)] == ["pcd"]
    (tmp_path / "e.toml").write_text('targets = ["two_mode"]\nalgorithms = ["pcd"]\ndefault_algorithms = ["cd"]\n'
                                     '[fidelity.quick.defaults]\nn_iters = 3\n')
    one_line_error(capsys, ["run", "--suite", "e"], "unknown algorithm 'cd'")


def test_ctrl_c_line_says_cells_are_saved_only_for_commands_that_save_cells(monkeypatch, capsys):
    """A Ctrl-C before any detail is known: a sweep says its finished cells are saved; `table` (which saves no
    cells) says only that it was interrupted. Both exit 130."""
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_table", interrupted)
    monkeypatch.setattr(cli, "cmd_run", interrupted)
    assert cli.main(["table", "--results", "nowhere"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["bench: interrupted by SIGINT"]
    assert cli.main(["run", "--suite", "toy2d"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["bench: interrupted by SIGINT (finished cells are saved)"]
