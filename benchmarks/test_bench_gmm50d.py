"""pytest-benchmark: one training iteration on 003's 50-d GMM at the paper's settings (App. B.1):
1e4 walkers, 1e4 data points, d = 50, float64, full batch, one ULA step per iteration.
(003's reference code: ~50 ms Jarzynski, ~31 ms PCD, ~34 ms CD per iteration on 2 threads.)"""

import bench  # noqa: F401

# isort: split
import pytest
import torch

import algorithms
import datasets
from algorithms.energies import GMMStudent
from bench.suite import load_suite, resolve_cells


@pytest.mark.parametrize("name", ["jarzynski", "pcd", "cd"])
def test_gmm50d_training_iteration_paper_settings(benchmark, name):
    torch.set_num_threads(2)
    cell = resolve_cells(load_suite("gmm50d"), "paper", [name], ["gmm50d"], seeds=1)[0]
    target = datasets.get_target("gmm50d")
    torch.manual_seed(0)
    data = target.sample(cell.train.n_data, torch.Generator().manual_seed(0)).double()
    energy = GMMStudent(50).double()
    alg = algorithms.ALGORITHMS[cell.base](algorithms.Problem(target, data), energy, cell.algo)
    benchmark.pedantic(alg.step, args=(data,), rounds=10, iterations=1, warmup_rounds=2)
