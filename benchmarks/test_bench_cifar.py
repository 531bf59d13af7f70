"""pytest-benchmark: time per training iteration of every image algorithm of the cifar10 suite on 32x32x3 inputs,
and the projected cost of the paper fidelity on this machine.

- ``test_cifar_iteration_quick_networks``: one training iteration of each algorithm at the quick fidelity's
  settings (small energies and flows) on random 32x32x3 images in [-1, 1] (no CIFAR-10 files needed), batch 64,
  1 thread: measured directly.
- ``test_cifar_unit_costs``: the papers' networks at 32x32x3: one energy value + input gradient per image
  (``convnet_lipswish``, ``resnet_ebm``, ``shortrun_convnet``, ``convnet_swish``) and one flow pass with its
  backward per image (001's Glow, the Flow++ stand-in, 000 C.6's RealNVP), batch 32, 1 thread.
- ``test_cifar_paper_projection``: the work one paper-fidelity iteration does (energy-gradient evaluations and
  flow passes per iteration, counted by algorithms/work.py on one iteration run with the paper's sampler
  settings but tiny networks, so the counts are exact and cheap to get) times those unit costs, times the
  paper's iteration count: ``extra_info["paper_cpu_hours"]``, a projection (it ignores parameter updates and
  counts every flow pass at the cost of a pass with backward), not a measurement.
Flow pre-training is not in the per-iteration numbers (it is its own cost: ``pretrain_steps`` flow passes with
backward per batch image).
"""

import bench  # noqa: F401

# isort: split
import copy
import functools
import math
import time

import pytest
import torch

ALGOS = ["pcd", "jarzynski_multinomial", "jarzynski_systematic", "ebm_noisy", "noise_free_euler", "self_adversarial",
         "coopflow_t30", "coopflow_t200", "coopflow_pre", "nt_ebm", "nce_ebm", "flowmc_ebm"]
SHAPE = (3, 32, 32)
PAPER_ENERGIES = ["convnet_lipswish", "resnet_ebm", "shortrun_convnet", "convnet_swish"]
#: the paper cells' flows: (levels, steps per level, channels, coupling)
PAPER_FLOWS = {"nt_ebm": (3, 16, 512, "additive"), "coopflow": (3, 20, 512, "affine"),
               "flowmc_ebm": (3, 8, 256, "affine")}


class Images32:
    """Random 32x32x3 images in [-1, 1] with the image-target interface the algorithms read (shape, box)."""

    name = "random32"
    dim = 3 * 32 * 32
    shape = SHAPE
    box = ((-1.0, 1.0),) * dim
    has_density = False


def _cell(fidelity: str, name: str):
    """The settings of ``name``'s cell at ``fidelity`` (quick / smoke: its digits8 cell; paper: its cifar10 cell)."""
    from bench.suite import load_suite, resolve_cells

    suite = load_suite("cifar10")
    if fidelity == "paper":
        return _paper_cell(suite, name)
    return resolve_cells(suite, fidelity, [name], ["digits8"])[0]


def _paper_cell(suite, name):
    """The paper cell's settings without reading CIFAR-10 files (the target is only named)."""
    import datasets.images as im

    saved = im.CIFAR10.check_data
    im.CIFAR10.check_data = lambda self: None
    try:
        from bench.suite import resolve_cells

        return resolve_cells(suite, "paper", [name])[0]
    finally:
        im.CIFAR10.check_data = saved


def _build(cell, energy_name=None, batch=None, tiny_flow=False):
    import algorithms
    from algorithms.energies import make_energy

    cfg = copy.deepcopy(cell.algo)
    n = batch or cell.train.batch_size
    for key in ("pretrain_steps",):
        if hasattr(cfg, key):
            setattr(cfg, key, 0)
    for key in ("n_persistent", "n_walkers"):
        if hasattr(cfg, key):
            setattr(cfg, key, max(n, 2 * n if key == "n_walkers" else n))
    if hasattr(cfg, "walker_batch") and cfg.walker_batch:
        cfg.walker_batch = n
    if tiny_flow and hasattr(cfg, "flow_layers"):
        cfg.flow_levels, cfg.flow_layers, cfg.flow_hidden = 1, 1, 4
    torch.manual_seed(0)
    data = torch.rand(4 * n, Images32.dim) * 2 - 1
    energy = make_energy(energy_name or cell.train.energy, Images32.dim, SHAPE)
    alg = algorithms.ALGORITHMS[cell.base](algorithms.Problem(Images32(), data), energy, cfg)
    return alg, data[:n]


@pytest.mark.parametrize("name", ALGOS)
def test_cifar_iteration_quick_networks(benchmark, name):
    torch.set_num_threads(1)
    alg, batch = _build(_cell("quick", name), batch=64)
    benchmark.pedantic(alg.step, args=(batch,), rounds=2, iterations=1, warmup_rounds=1)


def _time(fn, reps=2):
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def unit_costs(n: int = 32) -> dict[str, float]:
    """Seconds per image: energy value + input gradient of each paper energy, flow pass + backward of each flow."""
    from algorithms.energies import make_energy
    from algorithms.image_flows import ImageFlow
    from algorithms.work import Work

    torch.manual_seed(0)
    x = torch.rand(n, Images32.dim) * 2 - 1
    out = {}
    for name in PAPER_ENERGIES:
        e = make_energy(name, Images32.dim, SHAPE)
        out[f"energy:{name}"] = _time(lambda e=e: e.value_and_grad(x, Work())) / n
    for key, (lv, st, hid, cpl) in PAPER_FLOWS.items():
        f = ImageFlow(SHAPE, lv, st, hid, cpl)
        out[f"flow:{key}"] = _time(lambda f=f: f.log_prob(x).sum().backward(), reps=1) / n
    return out


def paper_work_per_iteration(name: str) -> tuple[dict[str, float], int]:
    """(energy-gradient evaluations and flow passes of one paper-fidelity iteration, the paper's iterations)."""
    cell = _paper_cell(__import__("bench.suite", fromlist=["load_suite"]).load_suite("cifar10"), name)
    alg, batch = _build(cell, energy_name="convnet_lipswish_small", tiny_flow=True)
    alg.step(batch)  # a first iteration (adaptations settle); then count one
    before = alg.work.as_dict()
    alg.step(batch)
    after = alg.work.as_dict()
    return {k: after[k] - before[k] for k in after}, cell.train.iterations()


def projection(units: dict[str, float]) -> dict[str, dict]:
    rows = {}
    for name in ALGOS:
        cell = _paper_cell(__import__("bench.suite", fromlist=["load_suite"]).load_suite("cifar10"), name)
        work, iters = paper_work_per_iteration(name)
        fam = cell.base if cell.base in PAPER_FLOWS else ("nt_ebm" if cell.base == "nce_ebm" else None)
        t_e = units[f"energy:{cell.train.energy}"]
        t_f = units[f"flow:{fam}"] if fam else 0.0
        per_iter = work["grad_evals"] * t_e + work["flow_passes"] * t_f
        rows[name] = {**work, "iterations": iters, "projected_s_per_iter": per_iter,
                      "paper_cpu_hours": per_iter * iters / 3600}
    return rows


def test_cifar_paper_projection(benchmark):
    torch.set_num_threads(1)
    units = benchmark.pedantic(unit_costs, rounds=1, iterations=1)
    benchmark.extra_info["unit_s_per_image"] = units
    rows = projection(units)
    benchmark.extra_info["paper"] = rows
    assert all(math.isfinite(r["paper_cpu_hours"]) and r["paper_cpu_hours"] > 0 for r in rows.values())


if __name__ == "__main__":  # python benchmarks/test_bench_cifar.py: the numbers as a table
    torch.set_num_threads(1)
    print("time per iteration at 32x32x3, quick networks, batch 64, 1 thread")
    for name in ALGOS:
        alg, batch = _build(_cell("quick", name), batch=64)
        print(f"  {name:24s} {_time(functools.partial(alg.step, batch), reps=2):8.3f} s")
    units = unit_costs()
    print("unit costs (s per image, 1 thread):", {k: round(v, 5) for k, v in units.items()})
    for name, r in projection(units).items():
        print(f"  {name:24s} grad_evals {r['grad_evals']:8d} flow_passes {r['flow_passes']:9d} "
              f"{r['projected_s_per_iter']:9.1f} s/iter x {r['iterations']:7d} = {r['paper_cpu_hours']:10.1f} CPU h")
