"""pytest-benchmark timings (run with `tox -e bench` or `pytest benchmarks --benchmark-only`).

Not part of CI's test command: timings on shared machines are noisy and belong here, not in unit tests.
- one ULA step on 8192 chains with the ~10.6k-parameter toy MLP;
- one training iteration of each baseline at 000's paper settings (batch 256, h = 0.0078125,
  512 ULA steps; two_mode: batch 64, 10 steps).
"""

import pytest
import torch

import algorithms
import bench  # noqa: F401
from algorithms.energies import ToyMLP
from algorithms.samplers import ula
from algorithms.work import Work
from bench.suite import load_suite, resolve_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # benchmarks/conftest.py


def test_ula_step_8192_chains(benchmark):
    torch.manual_seed(0)
    energy, work = ToyMLP(), Work()
    x = torch.randn(8192, 2)
    benchmark(ula, energy, x, 0.0078125, 1, work)


@pytest.mark.parametrize("target", ["four_mode", "two_mode"])
@pytest.mark.parametrize("name", ["ula_ebm", "cd", "short_run"])
def test_training_iteration_paper_settings(benchmark, name, target):
    cell = resolve_cells(load_suite("toy2d"), "paper", [name], [target], seeds=1)[0]
    import datasets

    t = datasets.get_target(target)
    torch.manual_seed(0)
    data = t.sample(cell.train.batch_size * 4)
    alg = algorithms.ALGORITHMS[name](algorithms.Problem(t, data), ToyMLP(), cell.algo)
    batch = data[: cell.train.batch_size]
    benchmark.pedantic(alg.step, args=(batch,), rounds=3, iterations=1, warmup_rounds=1)
