"""pytest-benchmark: one training iteration of each image algorithm of the digits suite (bench/suites/digits.toml)

- on 8x8 images at the quick settings (conv003_small, the biased 8x8 digits), and
- on 28x28 images at the paper settings (conv003, 78,929 parameters; 003 §4.2: N = 1024 walkers, 128 moved and
  a data batch of 128 per iteration; CD / short-run / noise-free at the suite's paper steps). MNIST's files are
  not needed: the iteration's cost does not depend on the pixels, so random images in [-1, 1] stand in for them.

One thread, as every cell of a ``-j 2`` sweep on 2 cores runs (on a shared, oversubscribed machine two threads
per step were 10-40x slower than one: spinning threads wait for each other).

Paper fidelity is 300 epochs of 9,800 images in batches of 128: 22,969 iterations per run; multiply the mean
time per iteration by that for a run's training time.

Measured on this project's 2-core CPU while shared (load average ~20), one thread, mean per iteration:
8x8 quick: PCD 5.9 ms, Jarzynski 41 ms (all 256 walkers move), noise-free Euler 79 ms, CD 83 ms, short-run
90 ms (10 ULA steps of 64 images). 28x28 paper: PCD 0.29 s, CD 1.1 s, Jarzynski 2.0 s (the loss and Alg. 2's
energy update touch all 1,024 walkers every iteration), noise-free Euler 9.0 s, short-run 10.4 s (100 steps of
128 images); a paper-fidelity run of 22,969 iterations: PCD ~1.8 h, Jarzynski ~12.5 h, CD ~7 h, short-run and
noise-free ~2.5 days per seed on this CPU: a GPU job. Run: ``python -m pytest benchmarks/test_bench_images.py
--benchmark-only`` (not part of the CI test command).
"""

import bench  # noqa: F401

# isort: split
import pytest
import torch

import algorithms
import datasets
from algorithms.energies import make_energy
from bench.suite import load_suite, resolve_cells

ALGOS = ["jarzynski", "pcd", "cd", "short_run", "noise_free_euler"]


def _alg(name, fidelity, size):
    cell = resolve_cells(load_suite("digits"), fidelity, [name], ["biased_digits8"], seeds=1)[0]
    if size == 8:
        target = datasets.get_target("biased_digits8")
        data = target.sample(cell.train.n_data, torch.Generator().manual_seed(0))
        energy_name = cell.train.energy
    else:
        target = datasets.get_target("biased_mnist")  # its shape and box only: no file is read
        data = torch.rand(9800, 784, generator=torch.Generator().manual_seed(0)) * 2 - 1
        energy_name = "conv003"
    torch.manual_seed(0)
    energy = make_energy(energy_name, target.dim)
    alg = algorithms.ALGORITHMS[cell.base](algorithms.Problem(target, data), energy, cell.algo)
    batch = data[: min(128 if size == 28 else cell.train.batch_size, len(data))]
    return alg, batch


@pytest.mark.parametrize("name", ALGOS)
def test_iteration_8x8_quick(benchmark, name):
    torch.set_num_threads(1)
    alg, batch = _alg(name, "quick", 8)
    benchmark.pedantic(alg.step, args=(batch,), rounds=10, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("name", ALGOS)
def test_iteration_28x28_paper(benchmark, name):
    torch.set_num_threads(1)
    alg, batch = _alg(name, "paper", 28)
    benchmark.pedantic(alg.step, args=(batch,), rounds=5, iterations=1, warmup_rounds=1)
