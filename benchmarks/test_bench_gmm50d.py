"""pytest-benchmark: one training iteration on 003's 50-d GMM at the paper's settings (App. B.1):
1e4 walkers, 1e4 data points, d = 50, float64, full batch, one ULA step per iteration, 2 threads.

Beside each iteration, the bare energy gradient on the same points (``value_and_grad`` of the student at the
1e4 walkers, one call) is timed in the same process, in alternating blocks, and
``extra_info["ratio_to_bare_grad"]`` = median iteration time / median bare-gradient time is the tracked
"physical limit" ratio: an iteration needs at least one gradient of U at every walker, so the ratio says how
many bare gradients' worth of time the rest of the iteration (noise, parameter gradient, weights,
resampling) costs. ``extra_info["paper_hours_per_cell"]`` is the median iteration time x 8000 iterations
(the paper fidelity's K; trace points and the final evaluation not included).
``test_gmm50d_bare_gradient`` times the bare gradient alone.
(003's reference code, 2 threads, same settings: ~39 ms Jarzynski, ~24 ms PCD, ~23 ms CD per iteration.)"""

import bench  # noqa: F401

# isort: split
import statistics
import time

import pytest
import torch

import algorithms
import datasets
from algorithms.energies import GMMStudent
from algorithms.work import Work
from bench.suite import load_suite, resolve_cells

PAPER_ITERS = 8000


def _build(name):
    cell = resolve_cells(load_suite("gmm50d"), "paper", [name], ["gmm50d"], seeds=1)[0]
    target = datasets.get_target("gmm50d")
    torch.manual_seed(0)
    data = target.sample(cell.train.n_data, torch.Generator().manual_seed(0)).double()
    energy = GMMStudent(50).double()
    alg = algorithms.ALGORITHMS[cell.base](algorithms.Problem(target, data), energy, cell.algo)
    return alg, energy, data


def _times(fn, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


@pytest.mark.parametrize("name", ["jarzynski", "pcd", "cd"])
def test_gmm50d_training_iteration_paper_settings(benchmark, name):
    torch.set_num_threads(2)
    alg, energy, data = _build(name)
    walkers = alg.negatives() if name == "jarzynski" else data
    work = Work()

    def bare():
        energy.value_and_grad(walkers, work)

    step_t, grad_t = [], []
    for _ in range(2):
        alg.step(data)
        bare()
    for _ in range(5):  # alternating blocks in one process, medians
        step_t += _times(lambda: alg.step(data), 4)
        grad_t += _times(bare, 4)
    step_ms, grad_ms = 1e3 * statistics.median(step_t), 1e3 * statistics.median(grad_t)
    benchmark.extra_info["iteration_ms"] = step_ms
    benchmark.extra_info["bare_grad_ms"] = grad_ms
    benchmark.extra_info["ratio_to_bare_grad"] = step_ms / grad_ms
    benchmark.extra_info["paper_hours_per_cell"] = step_ms * 1e-3 * PAPER_ITERS / 3600
    benchmark.pedantic(alg.step, args=(data,), rounds=10, iterations=1, warmup_rounds=2)


def test_gmm50d_bare_gradient(benchmark):
    """U and grad_x U of the student at 1e4 points in d = 50 (float64, 2 threads): the unit of the ratios."""
    torch.set_num_threads(2)
    alg, energy, data = _build("pcd")
    work = Work()
    benchmark.pedantic(energy.value_and_grad, args=(data, work), rounds=20, iterations=1, warmup_rounds=2)
