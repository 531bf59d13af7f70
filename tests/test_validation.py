"""Everything is validated before the first cell runs: names against the suite's own lists, every cell's
config and value ranges, the energy of every cell; bad input is one line, exit 2, and nothing written."""

import dataclasses

import pytest

import algorithms
import datasets
from algorithms.base import ConfigError, build_config, check_values
from bench import suite as suite_mod
from bench import sweep as sweep_mod
from bench.cli import main
from bench.suite import TrainConfig, load_suite, resolve_cells

HEAD = 'targets = ["two_mode", "rings"]\nalgorithms = ["cd", "flowmc_ebm"]\n'
SMOKE = "[fidelity.quick.defaults]\nn_iters = 2\nn_data = 64\nbatch_size = 8\n"


@pytest.fixture
def no_compute(monkeypatch):
    """Any cell that starts running fails the test: validation must happen before compute."""
    def boom(*a, **k):
        raise AssertionError("a cell ran before validation finished")

    monkeypatch.setattr(sweep_mod, "run_cell", boom)


def one_line(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: "), err
    assert match in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("extra, match", [
    ('energy = "toy_mpl"\n', "unknown energy 'toy_mpl'; valid: "),
    ("lr = nan\n", "parameter 'lr' must be finite, got nan"),
    ("lr = inf\n", "parameter 'lr' must be finite, got inf"),
    ("lr = 0\n", "parameter 'lr' must be > 0, got 0.0"),
    ("step_size = -1\n", "parameter 'step_size' must be > 0, got -1.0"),
    ("eval_grid = 0\n", "parameter 'eval_grid' must be >= 2, got 0"),
    ("batch_size = 0\n", "parameter 'batch_size' must be >= 1, got 0"),
    ("batch_size = 128\n", "batch_size (128) must not exceed n_data (64)"),
    ("n_chains = 1\n", "R-hat needs n_chains >= 2 and n_draws >= 4 (n_chains = 0: none), got n_chains = 1"),
    ("beta1 = 1.0\n", "parameter 'beta1' must be in [0, 1), got 1.0"),
    ("n_steps = 6\nsubsample = 4\n", "flowmc_ebm/two_mode: subsample must divide n_steps (6), got 4"),
    ("target_accept = 1.5\n", "parameter 'target_accept' must be in (0, 1), got 1.5"),
    ('param_lr = { nope = 0.1 }\n', "param_lr names unknown energy parameters ['nope']"),
])
def test_bad_values_fail_before_any_cell(extra, match, capsys, tmp_path, monkeypatch, no_compute):
    """Each of these once ran a cell (or several) first, or was recorded as 'diverged', or was a traceback."""
    path = tmp_path / "mine.toml"
    path.write_text(HEAD + SMOKE + "[fidelity.quick.targets.two_mode]\n" + extra)
    out = tmp_path / "out"
    line = one_line(capsys, ["run", "--suite", str(path), "--out", str(out)], match)
    assert str(path) in line or "mine [fidelity.quick]" in line  # says where
    assert not out.exists()


@pytest.mark.parametrize("text, match", [
    (HEAD + "fidelity = 3\n", "'fidelity' must be tables [fidelity.NAME]"),
    (HEAD + "[fidelity]\nquick = 3\n", "'fidelity' must be tables [fidelity.NAME]"),
    (HEAD + "[fidelity.quick]\nseeds = 0\n", "fidelity.quick.seeds must be an integer >= 1, got 0"),
    (HEAD + "[fidelity.quick]\ndefaults = 1\n", "fidelity.quick.defaults must be a table"),
    (HEAD + "[fidelity.quick.algorithms]\ncd = 1\n", "fidelity.quick.algorithms must be [fidelity.quick.algorithms"),
    ('targets = "two_mode"\nalgorithms = ["cd"]\n' + SMOKE, "'targets' must be a non-empty list of names"),
    ('targets = ["two_mode", "two_mode"]\nalgorithms = ["cd"]\n' + SMOKE, "'targets' lists 'two_mode' twice"),
    ('targets = ["two_mode"]\nalgorithms = []\n' + SMOKE, "'algorithms' must be a non-empty list of names"),
])
def test_malformed_suite_structure(text, match, capsys, tmp_path, no_compute):
    path = tmp_path / "s.toml"
    path.write_text(text)
    one_line(capsys, ["run", "--suite", str(path), "--out", str(tmp_path / "o")], match)
    assert not (tmp_path / "o").exists()


def test_non_utf8_and_missing_suite_files(capsys, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(HEAD.encode() + b'description = "caf\xe9"\n' + SMOKE.encode())
    one_line(capsys, ["run", "--suite", str(path)], "latin1.toml: not a UTF-8 text file")
    one_line(capsys, ["run", "--suite", str(tmp_path / "none.toml")], "none.toml: no such suite file")


def test_a_suite_file_outside_the_package_runs(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(HEAD + SMOKE)
    suite = load_suite(str(path))
    assert suite["name"] == "mine"
    cells = resolve_cells(suite, "quick")
    assert {(c.algorithm, c.target) for c in cells} == {(a, t) for a in ["cd", "flowmc_ebm"]
                                                          for t in ["two_mode", "rings"]}


@pytest.mark.parametrize("argv, match", [
    (["--suite", "toy2d", "--algorithms", "noise_free_ode"], "unknown algorithm 'noise_free_ode' for suite toy2d"),
    (["--suite", "gmm50d", "--targets", "two_mode"], "unknown target 'two_mode' for suite gmm50d; valid: gmm50d"),
    (["--suite", "toy2d", "--algorithms", "cd", "cd"], "algorithm 'cd' given twice"),
    (["--suite", "toy2d", "--targets", "rings,rings"], "target 'rings' given twice"),
])
def test_names_are_checked_against_the_suites_own_lists(argv, match, capsys, tmp_path, no_compute):
    """A registered algorithm or target that the suite does not list would run on untuned defaults."""
    one_line(capsys, ["run", *argv, "--out", str(tmp_path / "o")], match)
    assert not (tmp_path / "o").exists()


def test_no_command_prints_usage(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m bench") and "run" in err and "check" in err


def test_every_shipped_cell_validates():
    """The dry run (configs, ranges, energies, optimiser groups) passes for every cell the suites ship."""
    for name in suite_mod.available_suites():
        suite = load_suite(name)
        # image targets whose files are not on this machine (MNIST) are left out: their run stops with a one-line
        # DataError (tests/test_digits_suite.py)
        targets = [t for t in suite["targets"] if _has_data(t)]
        for fid in suite["fidelity"]:
            assert resolve_cells(suite, fid, algorithm_names=suite["algorithms"], target_names=targets)


def _has_data(name: str) -> bool:
    try:
        getattr(datasets.get_target(name), "check_data", lambda: None)()
    except datasets.DataError:
        return False
    return True


def test_range_check_catches_each_violation():
    """The shared check: nan anywhere, and each bound kind (closed, open, upper) on its edge."""
    with pytest.raises(ConfigError, match="'time_limit_s' must be finite"):
        build_config(TrainConfig, {"time_limit_s": float("nan")}, "w")
    assert build_config(TrainConfig, {"time_limit_s": 0.0, "n_chains": 2, "n_draws": 4}, "w").n_chains == 2
    cfg = algorithms.ALGORITHMS["flowmc_ebm"].Config
    with pytest.raises(ConfigError, match=r"'target_accept' must be in \(0, 1\)"):
        build_config(cfg, {"target_accept": 0.0}, "w")
    with pytest.raises(ConfigError, match="'adapt_factor' must be > 1"):
        build_config(cfg, {"adapt_factor": 1.0}, "w")
    with pytest.raises(ConfigError, match=r"param_lr\['z'\].* must be finite"):
        build_config(algorithms.ALGORITHMS["pcd"].Config, {"param_lr": {"z": float("inf")}}, "w")
    ok = build_config(cfg, {"n_steps": 8, "subsample": 4, "target_accept": 0.5}, "w")
    check_values(ok)
    check_values(dataclasses.replace(ok, step_size=1e-9))


def test_a_constraint_found_when_building_the_algorithm_is_one_line(capsys, tmp_path, monkeypatch):
    """The last line of defence: a constraint only the algorithm's constructor can check (e.g. Jarzynski's
    reference_std on an energy without a final linear layer; simulated here) ends in one line, not a
    traceback."""
    class Picky(algorithms.ALGORITHMS["cd"]):
        def __init__(self, *a, **k):
            raise ConfigError("needs something the config cannot say")

    monkeypatch.setitem(algorithms.ALGORITHMS, "cd", Picky)
    assert main(["run", "--suite", "toy2d", "--fidelity", "smoke", "--algorithms", "cd", "--targets", "two_mode",
                 "-j", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if ln.strip() and "cells:" not in ln] == [  # beside the progress bar: one line
        "bench: error: toy2d [fidelity.smoke] cd/two_mode: needs something the config cannot say"]
    assert not (tmp_path / "o" / "results.csv").exists()


PRECEDENCE = """
description = "one key set in every section, to see which wins"
targets = ["two_mode", "four_mode"]
algorithms = ["ula_ebm", "ula_fast"]
[variants.ula_fast]
algorithm = "ula_ebm"
step_size = 0.05
[fidelity.smoke]
seeds = 1
[fidelity.smoke.defaults]
n_iters = 4
lr = 0.001
n_steps = 1
n_persistent = 100
step_size = 0.01
[fidelity.smoke.algorithms.ula_ebm]
lr = 0.002
n_steps = 2
n_persistent = 200
[fidelity.smoke.algorithms.ula_fast]
n_steps = 3
[fidelity.smoke.targets.four_mode]
n_persistent = 300
n_steps = 4
[fidelity.smoke.cells."ula_ebm/four_mode"]
lr = 0.005
n_steps = 5
[fidelity.smoke.cells."ula_fast/four_mode"]
n_steps = 6
step_size = 0.9
"""


def test_a_cells_settings_are_merged_in_the_documented_order(tmp_path):
    """defaults < [algorithms.base] < [algorithms.variant] < [targets.t] < cells."base/t" < cells."variant/t" < the
    variant's defining parameters (bench/suite.py): each key below is set in several sections with distinct values."""
    (tmp_path / "precedence.toml").write_text(PRECEDENCE)
    cells = {(c.algorithm, c.target): c for c in resolve_cells(load_suite(str(tmp_path / "precedence.toml")),
                                                                 "smoke")}
    got = {k: (c.algo.lr, c.algo.n_steps, c.algo.n_persistent, c.algo.step_size) for k, c in cells.items()}
    assert got == {("ula_ebm", "two_mode"): (0.002, 2, 200, 0.01),  # the algorithm's section over the defaults
                   ("ula_ebm", "four_mode"): (0.005, 5, 300, 0.01),  # the target's over it, the cell's over both
                   ("ula_fast", "two_mode"): (0.002, 3, 200, 0.05),  # the variant's over its base's; fixed step
                   ("ula_fast", "four_mode"): (0.005, 6, 300, 0.05)}  # base's cell, variant's; fixed over 0.9
