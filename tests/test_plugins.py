"""Plug-ins: an algorithm and a target from outside the package, by `module:Class` in a suite file (a loose file
in the user's folder) and by entry points (an installed package), checked like the built-ins."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import algorithms
import bench as bench_api
import datasets
from algorithms import energies
from bench import plugins, registry
from bench.cli import main
from metrics import catalogue

ROOT = Path(__file__).resolve().parent.parent

ALGO = '''
"""PCD whose persistent chains restart from noise with a small probability."""
from dataclasses import dataclass, field

import torch

from algorithms.base import UNIT
from algorithms.pcd import PCD, PCDConfig


@dataclass
class RestartConfig(PCDConfig):
    restart_prob: float = field(default=0.05, metadata=UNIT)


class RestartPCD(PCD):
    name = "restart_pcd"
    paper = "Du & Mordatch 2019"
    Config = RestartConfig

    def start_chains(self, x_pos):
        x = super().start_chains(x_pos)
        fresh = torch.rand(x.shape[0], device=x.device) < self.config.restart_prob
        return torch.where(fresh[:, None], self.initial(self.config.init, x.shape[0]), x)
'''

TARGET = '''
from datasets.base import GaussianMixture


class Triangle(GaussianMixture):
    name = "triangle"
    paper = "a test"

    def __init__(self):
        super().__init__(means=[[-2.0, -1.5], [2.0, -1.5], [0.0, 2.0]], stds=0.4, weights=[0.2, 0.3, 0.5],
                         box=[(-4.0, 4.0), (-4.0, 4.0)])
'''

SMOKE = """
[fidelity.smoke]
seeds = 1
[fidelity.smoke.defaults]
n_data = 256
batch_size = 32
n_iters = 2
eval_every = 1
eval_grid = 20
trace_grid = 10
n_eval_samples = 200
n_chains = 2
n_draws = 4
n_negatives = 32
n_persistent = 32
n_steps = 1
"""


def suite_text(algos='"cd", "restart_pcd"', targets='"two_mode", "triangle"', plugin_lines=None) -> str:
    lines = plugin_lines if plugin_lines is not None else [
        "[plugins.algorithms]", 'restart_pcd = "my_algo:RestartPCD"',
        "[plugins.targets]", 'triangle = "my_target:Triangle"']
    return f"targets = [{targets}]\nalgorithms = [{algos}]\n" + "\n".join(lines) + "\n" + SMOKE


@pytest.fixture
def clean(monkeypatch):
    """Whatever a test registers is gone afterwards (registries, origins, imported user modules, sys.path)."""
    monkeypatch.setattr(algorithms, "ALGORITHMS", dict(algorithms.ALGORITHMS))
    monkeypatch.setattr(datasets, "TARGETS", dict(datasets.TARGETS))
    monkeypatch.setattr(energies, "ENERGIES", dict(energies.ENERGIES))
    monkeypatch.setattr(catalogue, "METRICS", dict(catalogue.METRICS))
    monkeypatch.setattr(registry, "ORIGINS", {})
    monkeypatch.setattr(plugins, "SPECS", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for m in set(sys.modules) - before:
        if m.startswith("my_"):
            del sys.modules[m]


@pytest.fixture
def project(tmp_path, clean, monkeypatch):
    """A user's folder: their algorithm and target as loose files and a suite file that names them."""
    (tmp_path / "my_algo.py").write_text(ALGO)
    (tmp_path / "my_target.py").write_text(TARGET)
    (tmp_path / "my_suite.toml").write_text(suite_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_loose_file_plugins_run_beside_the_built_ins_in_worker_processes(project, capsys):
    assert main(["run", "--suite", "my_suite.toml", "--fidelity", "smoke", "-j", "2", "--no-report"]) == 0
    res = pd.read_csv(project / "results" / "my_suite-smoke" / "results.csv")
    cells = res.drop_duplicates(["algorithm", "target"])
    assert sorted(zip(cells["algorithm"], cells["target"], strict=True)) == [
        ("cd", "triangle"), ("cd", "two_mode"), ("restart_pcd", "triangle"), ("restart_pcd", "two_mode")]
    assert (res["status"] == "ok").all()
    # the plug-in target's ground truth is used: three modes' weights
    assert {"ebm_weight[2]", "neg_weight[2]"} <= set(res[res["target"] == "triangle"]["metric"])
    assert json.loads(res[res["algorithm"] == "restart_pcd"]["config"].iloc[0])["restart_prob"] == 0.05
    # the workers keyed the plug-in's cells as this process does (with its source): a re-run skips them all
    capsys.readouterr()
    assert main(["run", "--suite", "my_suite.toml", "--fidelity", "smoke", "-j", "2", "--no-report"]) == 0
    assert "4 of 4 cells already finished" in capsys.readouterr().out
    assert main(["list", "--suite", "my_suite.toml"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("restart_pcd"))
    assert f"plug-in: {project / 'my_algo.py'} (my_algo:RestartPCD)" in line
    assert "[built-in]" in next(ln for ln in out.splitlines() if ln.strip().startswith("cd "))


def test_a_changed_plugin_reruns_and_an_unchanged_one_does_not(project, capsys):
    args = ["run", "--suite", "my_suite.toml", "--fidelity", "smoke", "-j", "1", "--no-report",
            "--algorithms", "restart_pcd", "--targets", "triangle"]
    assert main(args) == 0
    assert main(args) == 0
    assert "1 of 1 cells already finished" in capsys.readouterr().out
    first = set(pd.read_csv(project / "results" / "my_suite-smoke" / "results.csv")["cell_id"])
    (project / "my_algo.py").write_text(ALGO + "\n# changed\n")
    assert main(args) == 0
    assert "already finished" not in capsys.readouterr().out
    assert set(pd.read_csv(project / "results" / "my_suite-smoke" / "results.csv")["cell_id"]).isdisjoint(first)


BAD_ALGOS = {
    "missing method": ("class Bad(TrainingAlgorithm):\n    name = 'bad'\n    Config = C\n"
                       "    def step(self, x): return {}\n",
                       "Bad does not implement chain_starts, negatives, run_chains"),
    "config out of range": ("class Bad(PCD):\n    name = 'bad'\n    Config = Neg\n",
                            "parameter 'lr' must be > 0, got -1.0"),
    "config not a dataclass": ("class Bad(PCD):\n    name = 'bad'\n    Config = dict\n",
                               "Bad.Config must be a dataclass"),
    "wrong name": ("class Bad(PCD):\n    name = 'pcd2'\n", "Bad.name must be 'bad' (its registered name), got 'pcd2'"),
    "not an algorithm": ("class Bad:\n    name = 'bad'\n", "is not a subclass of algorithms.base.TrainingAlgorithm"),
    "import fails": ("raise RuntimeError('boom')\n", "importing my_bad raised RuntimeError: boom"),
}
HEADER = """
from dataclasses import dataclass, field
from algorithms.base import TrainingAlgorithm, POSITIVE
from algorithms.pcd import PCD, PCDConfig

@dataclass
class C:
    lr: float = 0.1

@dataclass
class Neg(PCDConfig):
    lr: float = field(default=-1.0, metadata=POSITIVE)
"""


@pytest.mark.parametrize("case", sorted(BAD_ALGOS))
def test_a_faulty_plugin_is_one_line_naming_it_and_nothing_runs(case, project, capsys):
    body, message = BAD_ALGOS[case]
    (project / "my_bad.py").write_text(HEADER + body)
    (project / "bad.toml").write_text(suite_text('"cd", "bad"', plugin_lines=[
        "[plugins.algorithms]", 'bad = "my_bad:Bad"']))
    assert main(["run", "--suite", "bad.toml", "--fidelity", "smoke", "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("bench: error: bad.toml [plugins.algorithms] bad = 'my_bad:Bad': "), err
    assert message in err[0]
    assert not (project / "results").exists()


@pytest.mark.parametrize("lines, message", [
    (['[plugins.algorithms]', 'x = "my_nowhere:X"'], "no module 'my_nowhere' (looked beside the suite file"),
    (['[plugins.algorithms]', 'x = "my_algo:Nope"'], "has no 'Nope'"),
    (['[plugins.algorithms]', 'x = "my_algo"'], "expected a reference 'module:Class', got 'my_algo'"),
    (['[plugins.algorithms]', 'cd = "my_algo:RestartPCD"'], "algorithm 'cd' is already registered (built-in)"),
    (['[plugins.models]', 'x = "my_algo:RestartPCD"'], "unknown section [plugins.models]; valid: [plugins.algorithms]"),
    (['[plugins.targets]', 'triangle = "my_algo:RestartPCD"'], "is not a subclass of datasets.base.Target"),
])
def test_bad_references_are_one_line(lines, message, project, capsys):
    (project / "bad.toml").write_text(suite_text('"cd"', '"two_mode"', plugin_lines=lines))
    assert main(["run", "--suite", "bad.toml", "--fidelity", "smoke", "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (project / "results").exists()


def test_a_target_with_wrong_sample_shape_is_refused(project, capsys):
    (project / "my_bad_target.py").write_text(TARGET.replace("class Triangle", "class Base") + textwrap.dedent("""
        class Flat(Base):
            name = "flat"
            def sample(self, n, generator=None):
                return super().sample(n, generator)[:, :1]
        """))
    (project / "bad.toml").write_text(suite_text('"cd"', '"flat"', plugin_lines=[
        "[plugins.targets]", 'flat = "my_bad_target:Flat"']))
    assert main(["run", "--suite", "bad.toml", "--fidelity", "smoke", "--no-report"]) == 2
    assert "Flat.sample(4) must have shape (4, 2), got (4, 1)" in capsys.readouterr().err


PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "my-ebm-plugins"
        version = "0.3"
        [project.entry-points."ebm_bench.algorithms"]
        restart_pcd = "my_ebm_plugins.algo:RestartPCD"
        [project.entry-points."ebm_bench.targets"]
        triangle = "my_ebm_plugins.target:Triangle"
        [tool.setuptools]
        packages = ["my_ebm_plugins"]
        """,
    "my_ebm_plugins/__init__.py": "",
    "my_ebm_plugins/algo.py": ALGO,
    "my_ebm_plugins/target.py": TARGET,
}


def test_an_installed_plugin_package_runs_at_smoke_fidelity(tmp_path):
    """A throwaway package with entry points, installed into a fresh folder (pip --target), found by a fresh
    process without any suite-file reference, run at smoke fidelity and read back by `bench table`."""
    src = tmp_path / "src"
    for name, text in PACKAGE.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(textwrap.dedent(text))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(src)], check=True, capture_output=True,
                   timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    (work / "suite.toml").write_text(suite_text('"ula_ebm", "restart_pcd"', plugin_lines=[]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "bench", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)

    p = bench("list")
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if ln.strip().startswith("restart_pcd"))
    assert "plug-in: entry point of my-ebm-plugins 0.3" in line
    p = bench("run", "--suite", "suite.toml", "--fidelity", "smoke", "-j", "1", "--no-report")
    assert p.returncode == 0, p.stderr[-2000:]
    res = pd.read_csv(work / "results" / "suite-smoke" / "results.csv")
    assert set(res["algorithm"]) == {"ula_ebm", "restart_pcd"} and set(res["target"]) == {"two_mode", "triangle"}
    assert (res["status"] == "ok").all()
    p = bench("table", "--results", "results/suite-smoke")
    assert p.returncode == 0, p.stderr
    assert "triangle" in p.stdout and "restart_pcd" in p.stdout


CHECKED = '''
import torch

from algorithms.pcd import PCD


class Flipped(PCD):
    """Ascends the likelihood instead of descending: must fail the learning check."""
    name = "flipped"

    def step(self, x_pos):
        x_neg = self.sample(self.start_chains(x_pos))
        self.keep(x_neg)
        self._neg = x_neg
        self.optimizer.zero_grad()
        (self.energy(x_neg).mean() - self.energy(x_pos).mean()).backward()
        self.optimizer.step()
        return {"loss": 0.0}


class Uncounted(PCD):
    """Its own Langevin loop that counts no work, and chains without the draw axis."""
    name = "uncounted"

    def sample(self, x0):
        x = x0.detach()
        for _ in range(self.config.n_steps):
            x = x.requires_grad_(True)
            (g,) = torch.autograd.grad(self.energy(x).sum(), x)
            x = (x - self.config.step_size * g + (2 * self.config.step_size) ** 0.5 * torch.randn_like(x)).detach()
        return x

    def step(self, x_pos):
        x_neg = self.sample(self.start_chains(x_pos))
        self.keep(x_neg)
        self._neg = x_neg
        self.optimizer.zero_grad()
        (self.energy(x_pos).mean() - self.energy(x_neg).mean()).backward()
        self.optimizer.step()
        return {"loss": 0.0}

    def run_chains(self, x0, n_draws):
        return self.sample(x0)
'''


def test_test_plugin_passes_a_good_plugin_and_fails_bad_ones(project, capsys):
    assert main(["test-plugin", "restart_pcd", "--suite", "my_suite.toml", "--iters", "100"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "RestartPCD (" in out and "7 of 7 checks passed" in out
    (project / "my_checked.py").write_text(CHECKED)
    assert main(["test-plugin", "my_checked:Flipped", "--iters", "60"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  learns the mean and scale of a Gaussian" in out
    assert "ok    counts its work" in out and "ok    chains are well formed" in out
    assert main(["test-plugin", "my_checked:Uncounted", "--iters", "60", "--set", "n_steps=5"]) == 1
    out = capsys.readouterr().out
    assert "ok    learns the mean and scale" in out  # it does learn ...
    assert "FAIL  counts its work" in out and "FAIL  chains are well formed" in out  # ... but is not well formed


@pytest.mark.parametrize("args, message", [
    (["nope"], "unknown algorithm, target, energy or metric 'nope'"),
    (["nope", "--kind", "targets"], "unknown target 'nope'; valid: biased_digits8"),
    (["cd", "--set", "n_stepz=3"], "unknown parameter 'n_stepz'"),
    (["cd", "--set", "lr=-1"], "parameter 'lr' must be > 0"),
    (["cd", "--set", "lr"], "--set 'lr': expected KEY=VALUE"),
    (["cd", "--iters", "0"], "--iters must be >= 1"),
])
def test_test_plugin_bad_input_is_one_line(args, message, capsys):
    assert main(["test-plugin", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def readme_files() -> dict[str, str]:
    """The README's plug-in example: the code blocks whose first line names their file (# my_*.py / .toml)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:python|toml)\n(# (my_\w+\.(?:py|toml))\n.*?)```", readme, re.S)
    return {name: text for text, name in blocks}


def test_the_readme_plugin_example_runs_as_written(tmp_path, clean, monkeypatch):
    files = readme_files()
    assert set(files) == {"my_algo.py", "my_target.py", "my_suite.toml", "my_metric.py", "my_highdim.toml"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    # the README's metric: the two lines it adds to my_suite.toml
    lines = re.search(r"```toml\n(\[plugins.metrics\]\n.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    with open(tmp_path / "my_suite.toml", "a") as f:
        f.write("\n" + lines)
    monkeypatch.chdir(tmp_path)
    # the README's suite, cut to one cell and a few iterations (the README shows the full run's tables)
    res = bench_api.run("my_suite.toml", algorithms=["restart_pcd"], targets=["triangle"], seeds=1, budget=3000,
                        jobs=1)
    assert (res["status"] == "ok").all() and set(res["target"]) == {"triangle"}
    assert res.loc[res["metric"] == "ebm_weight[2]", "value"].between(0, 1).all()
    worst = res.loc[res["metric"] == "neg_weight_max_error", "value"]
    negs = res[res["metric"].str.fullmatch(r"neg_weight\[\d\]")].sort_values("metric")["value"].to_numpy()
    assert len(worst) == 1 and worst.iloc[0] == pytest.approx(abs(negs - [0.2, 0.3, 0.5]).max())
    # the README's parametric target, cut to one seed of ULA-EBM and a few iterations
    res = bench_api.run("my_highdim.toml", algorithms=["ula_ebm"], seeds=1, budget=3000, jobs=1)
    assert (res["status"] == "ok").all() and set(res["target"]) == {"hd_mixture8"}
    assert {"audit_weight[3]", "max_rhat"} <= set(res["metric"])
    assert datasets.get_target("hd_mixture8").dim == 8


METRIC = '''
"""The worst mode's weight error of the negatives, max_k |w_k - w*_k|."""
import numpy as np

from metrics.catalogue import Gate, Metric


def worst_weight_error(weights, true_weights) -> float:
    return float(np.max(np.abs(np.asarray(weights) - np.asarray(true_weights))))


NEG_WEIGHT_MAX_ERROR = Metric(
    "neg_weight_max_error", "the largest error of a mode's weight among the negatives, max_k |w_k - w*_k|",
    needs=("negative_mode_weights", "true_weights"), compute=worst_weight_error, trace=True,
    better=-1, gate=Gate(floor=1e-3), headline="neg_max_err")
'''

HD_SUITE = """
targets = ["hd_mixture4"]
algorithms = ["ula_ebm"]
[plugins.targets]
hd_mixture4 = { ref = "datasets.highdim:HDMixture", dim = 4 }
[plugins.metrics]
neg_weight_max_error = "my_metric:NEG_WEIGHT_MAX_ERROR"
[fidelity.smoke]
seeds = 1
[fidelity.smoke.defaults]
n_data = 256
batch_size = 32
n_iters = 4
eval_every = 2
rhat_every = 1
n_eval_samples = 200
n_chains = 4
n_draws = 8
burn_in = 2
n_negatives = 64
n_persistent = 64
n_steps = 2
audit_chains = 4
audit_draws = 8
audit_burn_in = 4
"""


def test_a_member_of_the_suites_own_family_and_a_metric_as_plug_ins_get_the_tables_and_figures(tmp_path, clean,
                                                                                             monkeypatch, capsys):
    """000's 4-mode mixture in d = 4 under a name of its own (no subclass written) with a metric of the user's:
    the same metrics, tables and figures as the suite's hd_mixture targets, the metric measured, gated, listed
    and in the headline table; no empty section."""
    from bench import check, report

    (tmp_path / "my_metric.py").write_text(METRIC)
    (tmp_path / "my_hd.toml").write_text(HD_SUITE)
    monkeypatch.chdir(tmp_path)
    res = bench_api.run("my_hd.toml", fidelity="smoke", jobs=1)
    assert set(res["target"]) == {"hd_mixture4"} and (res["status"] == "ok").all()
    got = set(res["metric"])
    assert {"audit_weight[3]", "audit_max_rhat", "neg_weight_mse_vs_audit", "max_rhat", "neg_weight_max_error"} <= got
    t = datasets.get_target("hd_mixture4")
    assert (t.dim, t.params) == (4, {"dim": 4}) and t.mode_weights.tolist() == [0.25] * 4
    names = {name for name, _, df in report.sections(res)}
    assert {"mixing", "sample_weights", "key_metrics"} <= names and "mode_weights" not in names
    key = dict(bench_api.table("results/my_hd-smoke", save=False))["key_metrics"]
    assert "neg_max_err" in key.columns
    figures = {p.name for p in bench_api.plot("results/my_hd-smoke")}
    assert {"rhat_over_training.png", "neg_weights_over_training.png"} <= figures
    assert check.rule("neg_weight_max_error").direction == -1
    assert main(["list", "--suite", "my_hd.toml"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("neg_weight_max_error"))
    assert "gated, lower is better" in line and f"plug-in: {tmp_path / 'my_metric.py'}" in line
    assert "(datasets.highdim:HDMixture, dim=4)" in next(ln for ln in out.splitlines()
                                                       if ln.strip().startswith("hd_mixture4"))


@pytest.mark.parametrize("lines, message", [
    (['[plugins.algorithms]', 'x = { ref = "algorithms.pcd:PCD", lr = 1 }'],
     "parameters are for a target or an energy"),
    (['[plugins.targets]', 'hd3 = { ref = "datasets.highdim:HDMixture", dims = 3 }'],
     "HDMixture does not take these parameters (got an unexpected keyword argument 'dims')"),
    (['[plugins.targets]', 'hd1 = { ref = "datasets.highdim:HDMixture", dim = 1 }'],
     "the 4-mode mixture needs dim >= 2, got 1"),
    (['[plugins.metrics]', 'm = "my_algo:RestartPCD"'], "is not a metrics.catalogue.Metric"),
    (['[plugins.targets]', 'x = { dim = 3 }'], "must map names to 'module:Class' strings or to tables"),
])
def test_bad_parametric_and_metric_plugins_are_one_line(lines, message, project, capsys):
    (project / "bad.toml").write_text(suite_text('"cd"', '"two_mode"', plugin_lines=lines))
    assert main(["run", "--suite", "bad.toml", "--fidelity", "smoke", "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (project / "results").exists()
