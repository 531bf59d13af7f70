"""pytest-benchmark: how one training iteration grows with d on the high-dimensional mixture (000 App. C.5).

For each of ULA-EBM, NT-EBM, CoopFlow and flowMC-EBM at 000's paper settings (Table 7 samplers and steps,
Table 6 flows, batch 128, persistent 8192; suite ``highdim``, fidelity ``paper``) and d = 16, 32, 64:
- the time of one training iteration (pytest-benchmark, 1 thread);
- ``extra_info["peak_rss_increase_mb"]``: in a fresh process, the peak resident memory during two iterations
  above the resident memory just before them (Linux: the peak is reset through /proc/self/clear_refs), i.e.
  the iteration's working memory;
- ``extra_info["paper_cpu_hours_per_cell"]``: mean iteration time x 58,594 iterations (150 epochs of 50,000
  points in batches of 128), i.e. what one paper-fidelity cell would take on this machine, 1 thread.
Flow pre-training is not timed (it is set to 0 steps here; 512 steps at paper fidelity).
"""

import bench  # noqa: F401

# isort: split
import multiprocessing as mp
from pathlib import Path

import pytest
import torch

PAPER_ITERS = 58_594


def _build(name: str, d: int):
    import algorithms
    import datasets
    from algorithms.energies import make_energy
    from bench.suite import load_suite, resolve_cells

    cell = resolve_cells(load_suite("highdim"), "paper", [name], [f"hd_mixture{d}"], seeds=1)[0]
    if hasattr(cell.algo, "pretrain_steps"):
        cell.algo.pretrain_steps = 0
    target = datasets.get_target(f"hd_mixture{d}")
    torch.manual_seed(0)
    data = target.sample(4 * cell.train.batch_size, torch.Generator().manual_seed(0))
    alg = algorithms.ALGORITHMS[name](algorithms.Problem(target, data), make_energy(cell.train.energy, d), cell.algo)
    return alg, data[: cell.train.batch_size]


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def _peak_rss_increase_mb(name: str, d: int) -> float:
    torch.set_num_threads(1)
    alg, batch = _build(name, d)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident size
    before = _status_kb("VmRSS")
    for _ in range(2):
        alg.step(batch)
    return (_status_kb("VmHWM") - before) / 1024


@pytest.mark.parametrize("d", [16, 32, 64])
@pytest.mark.parametrize("name", ["ula_ebm", "nt_ebm", "coopflow", "flowmc_ebm"])
def test_highdim_iteration_paper_settings(benchmark, name, d):
    torch.set_num_threads(1)
    with mp.get_context("spawn").Pool(1) as pool:
        benchmark.extra_info["peak_rss_increase_mb"] = pool.apply(_peak_rss_increase_mb, (name, d))
    alg, batch = _build(name, d)
    benchmark.pedantic(alg.step, args=(batch,), rounds=3, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (the iteration then runs once, untimed)
        benchmark.extra_info["paper_cpu_hours_per_cell"] = benchmark.stats.stats.mean * PAPER_ITERS / 3600
