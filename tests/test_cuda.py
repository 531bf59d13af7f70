"""One smoke cell of every algorithm the suites run, on CUDA: trains, evaluates and records finite metrics with
``device = cuda``. Skipped when no GPU is present (the one accepted skip)."""

import math

import pytest
import torch

from bench.runner import run_cell
from bench.suite import available_suites, load_suite, resolve_cells


def one_cell_per_algorithm():
    cells = {}
    for name in available_suites():
        suite = load_suite(name)
        for c in resolve_cells(suite, "smoke", algorithm_names=suite["algorithms"], seeds=1):
            cells.setdefault(c.base, c)
    return sorted(cells.values(), key=lambda c: c.base)


CELLS = one_cell_per_algorithm()


def check_smoke_cell(cell, device):
    rows, traces, artifacts = run_cell(cell, device=device)
    assert rows and {r["status"] for r in rows} == {"ok"}, rows[:1]
    assert {r["device"] for r in rows} == {device}
    values = {r["metric"]: r["value"] for r in rows}
    headline = values.get("ebm_weight_mse", values.get("test_loglik", values.get("label_weight_relerr_mean")))
    assert math.isfinite(headline), values
    assert rows[0]["grad_evals"] > 0 or rows[0]["energy_evals"] > 0
    return values


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("cell", CELLS, ids=[c.base for c in CELLS])
def test_smoke_cell_on_cuda(cell):
    check_smoke_cell(cell, "cuda")


def test_every_registered_algorithm_is_covered():
    import algorithms

    assert {c.base for c in CELLS} == set(algorithms.ALGORITHMS)
