"""pytest-benchmark timings of seeds trained together (algorithms/stacking.py, ``bench run --stack-seeds``): one
ULA-EBM training iteration of S = 4 seeds as one stack beside the same iteration of the 4 seeds one after the
other (run with `pytest benchmarks/test_bench_stacking.py --benchmark-only`; not part of CI's test command).

The toy2d quick four_mode cell's settings (000's toy MLP, float32, 40 ULA steps per iteration, one thread) at
64, 256 and 1024 chains per seed. ``extra_info`` records both per-iteration times (medians of alternating blocks)
and ``speedup`` = one by one / stacked, the tracked number (S = 4 is the most it can be: stacking removes the fixed
cost per operation, not the arithmetic; at 256 chains on a CPU the matrix products are most of a step).

``test_stacked_flowmc_ebm_iteration``: the same for one flowMC-EBM iteration of the toy2d quick four_mode cell (64
chains per seed, 1 i-SIR step of 64 particles then 7 MALA steps; the i-SIR step evaluates the energy on 4,096 points
per seed, arithmetic that stacking does not remove).

``test_stacked_coopflow_iteration``: the same for one CoopFlow iteration of the toy2d quick four_mode cell past its
warm-up (256 flow draws per seed revised by 64 noise-free Langevin steps, then the flow's and the energy's steps)."""

import dataclasses

import pytest
import torch
from test_bench_samplers import _side_by_side

from algorithms.stacking import stack_of
from bench.runner import _Seed
from bench.suite import load_suite, resolve_cells

S = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # benchmarks/conftest.py


def _stacked_iteration(benchmark, algorithm, n=None, **algo):
    """One training iteration of S seeds stacked, timed side by side with the S seeds one after the other (toy2d
    quick four_mode; ``n`` chains per seed, or the suite's batch; ``algo``: settings replaced)."""
    cells = resolve_cells(load_suite("toy2d"), "quick", [algorithm], ["four_mode"], S)
    cells = [dataclasses.replace(c, algo=dataclasses.replace(c.algo, **algo)) for c in cells]
    if n is not None:
        cells = [dataclasses.replace(c, train=dataclasses.replace(c.train, batch_size=n)) for c in cells]
    dev, n = torch.device("cpu"), cells[0].train.batch_size
    alone = [_Seed(c, dev) for c in cells]
    seeds = [_Seed(c, dev) for c in cells]
    stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds])

    def stacked():
        stack.step(torch.stack([s.data[:n] for s in seeds]))

    def one_by_one():
        for s in alone:
            s.alg.step(s.data[:n])

    times = _side_by_side(stacked, one_by_one, "cpu")  # {clock: (stacked, one by one)}
    (t_stack, t_one), (c_stack, c_one) = times["wall"], times["cpu"]
    benchmark.extra_info.update(batch=n, seeds=S, stacked_s=t_stack, one_by_one_s=t_one, speedup=t_one / t_stack,
                                stacked_cpu_s=c_stack, one_by_one_cpu_s=c_one, cpu_speedup=c_one / c_stack)
    benchmark.pedantic(stacked, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("n", [64, 256, 1024])
def test_stacked_ula_ebm_iteration(benchmark, n):
    _stacked_iteration(benchmark, "ula_ebm", n)


def test_stacked_flowmc_ebm_iteration(benchmark):
    _stacked_iteration(benchmark, "flowmc_ebm")


def test_stacked_coopflow_iteration(benchmark):
    _stacked_iteration(benchmark, "coopflow", warmup_iters=0)  # every timed iteration steps the flow too
