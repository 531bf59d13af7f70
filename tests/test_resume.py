"""Cells are cached and resumable; divergence, time limits and budgets are recorded as outcomes."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import algorithms
from bench import store as store_mod
from bench.cli import main
from bench.store import KEY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["run", "--suite", "toy2d", "--fidelity", "smoke", "--no-report", "-j", "1"]


def cells_in(out):
    return pd.read_csv(out / "results.csv").drop_duplicates(KEY)


def test_finished_cells_are_skipped_and_force_recomputes(tmp_path, capsys):
    out = tmp_path / "r"
    argv = [*SMOKE, "--algorithms", "cd", "--targets", "two_mode", "rings", "--out", str(out)]
    assert main(argv) == 0
    first = cells_in(out).set_index("target")["finished_at"]
    capsys.readouterr()
    assert main(argv) == 0
    assert "2 of 2 cells already finished" in capsys.readouterr().out
    assert cells_in(out).set_index("target")["finished_at"].equals(first)
    assert main([*argv, "--targets", "two_mode", "four_mode"]) == 0  # only four_mode is new
    assert "1 of 2 cells already finished" in capsys.readouterr().out
    assert len(cells_in(out)) == 3
    time.sleep(1.1)
    assert main([*argv, "--force"]) == 0
    assert (cells_in(out).set_index("target").loc[["two_mode", "rings"], "finished_at"] > first).all()


def test_changed_config_is_a_new_cell(tmp_path, capsys):
    out = tmp_path / "r"
    argv = [*SMOKE, "--algorithms", "cd", "--targets", "two_mode", "--out", str(out)]
    assert main(argv) == 0
    ids = set(pd.read_csv(out / "results.csv")["cell_id"])
    assert main([*argv, "--budget", "100000"]) == 0  # a budget changes the config: recomputed, replaced
    res = pd.read_csv(out / "results.csv")
    assert set(res["cell_id"]) & ids == set() and len(res.drop_duplicates(KEY)) == 1


def test_sigkill_mid_sweep_then_resume(tmp_path):
    """Kill a sweep with SIGKILL after some cells finished: the results file stays readable, no finished cell
    is lost, and the re-run computes only what was missing."""
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "bench", *SMOKE, "--seeds", "3", "--algorithms", "ula_ebm", "cd",
           "--targets", "two_mode", "four_mode", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if (out / "results.csv").exists() and len(cells_in(out)) >= 3:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = cells_in(out)
    assert 3 <= len(before) < 12, "the sweep should have been killed part-way"
    # SIGKILL cannot be caught: a write in flight may leave its hidden temporary (never a half-written
    # results file), named with the dead writer's pid; the re-run removes it
    left = [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert all(f.startswith(".") and not store_mod._alive(int(f.rsplit(".", 3)[-3])) for f in left), left
    done = p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert f"{len(before)} of 12 cells already finished" in done.stdout
    after = cells_in(out)
    assert len(after) == 12
    kept = after.merge(before[[*KEY, "finished_at", "cell_id"]], on=KEY, suffixes=("", "_before"))
    assert (kept["finished_at"] == kept["finished_at_before"]).all()  # finished cells untouched
    assert (kept["cell_id"] == kept["cell_id_before"]).all()


class Exploding(algorithms.ALGORITHMS["short_run"]):
    def step(self, x_pos):
        logs = super().step(x_pos)
        return {**logs, "loss": float("nan") if self._it >= 3 else logs["loss"]}


def test_divergence_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(algorithms.ALGORITHMS, "short_run", Exploding)
    out = tmp_path / "d"
    assert main([*SMOKE, "--algorithms", "short_run", "cd", "--targets", "two_mode", "--out", str(out)]) == 0
    res = cells_in(out).set_index("algorithm")
    assert res.loc["short_run", "status"] == "diverged" and "step 3" in res.loc["short_run", "reason"]
    assert res.loc["cd", "status"] == "ok"
    assert main(["table", "--results", str(out)]) == 0
    assert "diverged" in capsys.readouterr().out


def test_time_limit_and_budget(tmp_path):
    out = tmp_path / "t"
    assert main([*SMOKE, "--algorithms", "cd", "--targets", "two_mode", "--cell-timeout", "1e-9",
                 "--out", str(out)]) == 0
    row = cells_in(out).iloc[0]
    assert row["status"] == "timeout" and "time limit" in row["reason"]
    out2 = tmp_path / "b"
    # smoke: batch 32, 2 ULA steps: each iteration costs 32 * 2 + 64 = 128 gradient evaluations
    assert main([*SMOKE, "--algorithms", "cd", "--targets", "two_mode", "--budget", "200", "--out", str(out2)]) == 0
    row = cells_in(out2).iloc[0]
    assert row["status"] == "ok" and row["n_iters"] == 2 and row["grad_evals"] == 256


@pytest.mark.parametrize("flag, value", [("--budget", "0"), ("--budget", "-5"), ("--cell-timeout", "0"),
                                         ("--cell-timeout", "nan"), ("--cell-timeout", "inf")])
def test_bad_budget_and_timeout(flag, value, capsys, tmp_path):
    assert main([*SMOKE, flag, value, "--out", str(tmp_path / "x")]) == 2
    assert f"{flag} must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
