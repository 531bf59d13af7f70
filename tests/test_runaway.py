"""Runaway energies as an outcome (bench.runner.RUNAWAY_SPREAD): a run whose energy is forced to run away is
recorded as ``runaway`` at the first trace point after it, with its metrics kept; the measure itself
(``energy_spread``) on known values; non-finite energies are divergence, not a runaway."""

import dataclasses
import math

import pytest
import torch

import algorithms
from algorithms.base import Diverged
from bench.runner import RUNAWAY_SPREAD, run_cell, runaway_check
from bench.suite import load_suite, resolve_cells
from metrics.density import energy_spread

FORCED_AT = 5


class RunsAway(algorithms.ALGORITHMS["ula_ebm"]):
    """ULA-EBM whose energy is multiplied by 1e6 after its FORCED_AT-th step (the smoke energy's spread over the
    test set is about 0.05 nats, so it becomes about 5e4 > RUNAWAY_SPREAD, with a finite loss far below the
    divergence threshold)."""

    def step(self, x_pos):
        logs = super().step(x_pos)
        if self._it == FORCED_AT:
            with torch.no_grad():
                self.energy.net[-1].weight.mul_(1e6)
                self.energy.net[-1].bias.mul_(1e6)
        return logs


def smoke_cell(n_iters=8, eval_every=2):
    (cell,) = resolve_cells(load_suite("toy2d"), "smoke", ["ula_ebm"], ["two_mode"], 1)
    return dataclasses.replace(cell, train=dataclasses.replace(cell.train, n_iters=n_iters, eval_every=eval_every))


def run(cell, monkeypatch, cls=RunsAway):
    monkeypatch.setitem(algorithms.ALGORITHMS, "ula_ebm", cls)
    rows, traces, _ = run_cell(cell)
    metrics = {r["metric"]: r["value"] for r in rows}
    spread = {t["iteration"]: t["value"] for t in traces if t["metric"] == "energy_spread"}
    return rows[0], metrics, spread


def test_a_forced_runaway_is_flagged_at_the_first_trace_point_after_it(monkeypatch):
    row, metrics, spread = run(smoke_cell(), monkeypatch)
    # trace points at 2, 4, 6, 8; forced after step 5: healthy at 2 and 4, runaway from 6
    assert spread[2] < 1 and spread[4] < 1 and spread[6] > RUNAWAY_SPREAD
    assert row["status"] == "runaway" and row["reason"].startswith("step 6: energy_spread ")
    assert metrics["runaway_at"] == 6.0
    # training went on to the end and the run was evaluated: its metrics are kept (tables leave them out)
    assert row["n_iters"] == 8 and metrics["kl"] > 100 and metrics["energy_spread"] > RUNAWAY_SPREAD


def test_without_trace_points_the_rule_is_checked_after_training(monkeypatch):
    row, metrics, spread = run(smoke_cell(eval_every=0), monkeypatch)
    assert not spread and row["status"] == "runaway" and metrics["runaway_at"] == 8.0


def test_a_healthy_run_is_ok(monkeypatch):
    row, metrics, spread = run(smoke_cell(), monkeypatch, algorithms.ALGORITHMS["ula_ebm"])
    assert row["status"] == "ok" and "runaway_at" not in metrics
    assert all(0 < v < 1 for v in spread.values())


def test_energy_spread_known_values():
    assert energy_spread(torch.tensor([1.0, 5.0, -2.0])) == 7.0
    # free of the additive constant, which no maximum-likelihood gradient fixes
    assert energy_spread(torch.tensor([1.0, 5.0, -2.0]) + 1e6) == 7.0
    assert energy_spread(torch.tensor([3.0])) == 0.0
    assert energy_spread(torch.tensor([1.0, math.inf])) == math.inf
    assert math.isnan(energy_spread(torch.tensor([1.0, math.nan, math.inf])))


def test_the_rule_threshold_and_non_finite_energies():
    assert runaway_check(None, 10) is None
    assert runaway_check(RUNAWAY_SPREAD, 10) is None  # at the threshold: not yet
    assert runaway_check(RUNAWAY_SPREAD * 1.01, 10) == (10, RUNAWAY_SPREAD * 1.01)
    for bad in (math.inf, math.nan):
        with pytest.raises(Diverged, match="non-finite energy on held-out data"):
            runaway_check(bad, 10)
