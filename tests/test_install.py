"""A non-editable install (the wheel) works from an empty folder: the right packages and suite files are in
it, results go to the working directory, and `check` says how to give the baseline that lives in the
repository."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    cwd = tmp / "empty"
    cwd.mkdir()
    return wheel, tmp / "site", cwd


def bench(installed, *args):
    _, site, cwd = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_holds_the_four_packages_and_the_suites(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"bench", "algorithms", "datasets", "metrics"}  # no top-level `benchmarks`, no `tests`
    assert {f"bench/suites/{s}.toml" for s in ("toy2d", "gmm50d", "selfadv2d")} <= set(names)


def test_installed_copy_runs_smoke_into_the_working_directory(installed):
    _, site, cwd = installed
    p = bench(installed, "run", "--suite", "toy2d", "--fidelity", "smoke", "--algorithms", "cd", "--targets",
              "two_mode", "--seeds", "3", "-j", "1", "--no-report")  # a baseline needs >= 3 seeds
    assert p.returncode == 0, p.stderr[-2000:]
    res = pd.read_csv(cwd / "results" / "toy2d-smoke" / "results.csv")
    assert (res["status"] == "ok").all()
    assert res["code_version"].iloc[0].startswith("v")  # the package version, not some enclosing git repo's
    loaded = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, bench, datasets; print(json.dumps([bench.__file__, datasets.__file__]))"],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, check=True).stdout)
    assert all(f.startswith(str(site)) for f in loaded)
    assert not (site / "results").exists()

    p = bench(installed, "check", "--suite", "toy2d")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "bench: error: results/baselines/toy2d-quick.csv: no such baseline; give one with --baseline PATH (the "
        "repository's results/baselines/toy2d-quick.csv) or make one with 'python -m bench baseline'"]
    out = str(cwd / "results" / "toy2d-smoke")
    p = bench(installed, "baseline", "--suite", "toy2d", "--fidelity", "smoke", "--results", out,
              "--baseline", "b.csv")
    assert p.returncode == 0, p.stderr[-2000:]
    p = bench(installed, "check", "--suite", "toy2d", "--fidelity", "smoke", "--results", out, "--baseline", "b.csv")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "0 regression(s)" in p.stdout
