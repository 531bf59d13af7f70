"""pytest-benchmark timings of one sampler step beside its physical limit (run with `tox -e bench` or
`pytest benchmarks/test_bench_samplers.py --benchmark-only`; not part of CI's test command).

The limit of a gradient-based step on N chains is what it cannot avoid: one bare energy gradient
``torch.autograd.grad(energy(x).sum(), x)`` on the same N points plus its Gaussian draw (N x d). Each test
times the step (pytest-benchmark's own numbers) and, separately, the step and its limit side by side in
alternating blocks (medians); ``extra_info`` records both per-step times and ``ratio`` = step / limit in wall
time, the tracked number (1.0 = the step costs exactly one bare gradient and one draw; the suite's MLP energies
take their gradient without an autograd graph, so the ratio can fall below 1), and ``cpu_ratio``, the same in this
process's CPU time: the number to read on a loaded machine, where the wall clock also counts waiting for a core.

* ULA: ``samplers.ula`` for ``K`` steps vs K x (gradient + draw).
* MALA: ``MALA.run`` for K steps (K + 1 gradients: one at the start) vs (K + 1) gradients + K draws.
* flowMC: one block of 1 i-SIR step (32 particles) and K MALA steps vs (K + 1) gradients + K draws + the
  i-SIR step's unavoidable parts (31 flow samples and one flow density per chain, the energy at 32 points
  per chain).

Chains: 256 (the 2-D suites' batch: dispatch-bound, the fixed cost per step), 4096 and 65536; the toy MLP of
000 (10.6k parameters) in 2-D, float32, one thread; MALA also on 003's student in d = 50, float64 (a cheap
closed-form gradient, so the step's own passes over the (n, d) states show). The same tests run on CUDA where a
GPU is present.
"""

import statistics
import time

import pytest
import torch

from algorithms.energies import GMMStudent, ToyMLP
from algorithms.flows import RealNVP
from algorithms.mcmc import ISIR, MALA, Adaptation, FlowMC
from algorithms.samplers import ula
from algorithms.work import Work

K = 4  # sampler steps per timed call
CHAINS = [256, 4096, 65536]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # benchmarks/conftest.py


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _bare_grad(energy, x):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(x).sum(), x)
    return g


def _side_by_side(step, limit, device, blocks=6):
    """Medians of alternating blocks: {clock: (seconds per call of ``step``, of ``limit``)} for the wall clock
    ("wall") and this process's CPU time ("cpu": on a loaded machine the wall clock also counts the time the
    process waited for a core; one thread, so CPU time is the step's own work)."""
    step(), limit()  # warm-up
    reps = 1
    t0 = time.perf_counter()
    step()
    _sync(device)
    reps = max(1, min(50, int(0.05 / max(time.perf_counter() - t0, 1e-6))))
    out = {(clock, fn): [] for clock in ("wall", "cpu") for fn in (step, limit)}
    for b in range(blocks):
        for fn in (step, limit) if b % 2 == 0 else (limit, step):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                fn()
            _sync(device)
            out["wall", fn].append((time.perf_counter() - t0) / reps)
            out["cpu", fn].append((time.process_time() - c0) / reps)
    return {clock: (statistics.median(out[clock, step]), statistics.median(out[clock, limit]))
            for clock in ("wall", "cpu")}


def _record(benchmark, step, limit, device, n, steps):
    times = _side_by_side(step, limit, device)
    (t_step, t_limit), (c_step, c_limit) = times["wall"], times["cpu"]
    benchmark.extra_info.update(chains=n, device=device, steps_per_call=steps, step_s=t_step / steps,
                                limit_s=t_limit / steps, ratio=t_step / t_limit, cpu_ratio=c_step / c_limit)
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)


def _setup(device, n, energy="toy_mlp"):
    torch.manual_seed(0)
    if energy == "student50":
        return GMMStudent(50).double().to(device), torch.randn(n, 50, dtype=torch.float64, device=device)
    return ToyMLP().to(device), torch.randn(n, 2, device=device)


@pytest.mark.parametrize("n", CHAINS)
@pytest.mark.parametrize("device", DEVICES)
def test_ula_step(benchmark, device, n):
    energy, x = _setup(device, n)
    work = Work()

    def step():
        return ula(energy, x, 0.0078125, K, work)

    def limit():
        for _ in range(K):
            _bare_grad(energy, x), torch.randn_like(x)

    _record(benchmark, step, limit, device, n, K)


@pytest.mark.parametrize("energy", ["toy_mlp", "student50"])
@pytest.mark.parametrize("n", CHAINS)
@pytest.mark.parametrize("device", DEVICES)
def test_mala_step(benchmark, device, n, energy):
    energy, x = _setup(device, n, energy)
    work = Work()
    mala = MALA(0.01, Adaptation(0.75, enabled=False))

    def step():
        return mala.run(energy, x, K, work)

    def limit():
        _bare_grad(energy, x)
        for _ in range(K):
            _bare_grad(energy, x), torch.randn_like(x)

    _record(benchmark, step, limit, device, n, K)


@pytest.mark.parametrize("n", CHAINS)
@pytest.mark.parametrize("device", DEVICES)
def test_flowmc_block(benchmark, device, n):
    energy, x = _setup(device, n)
    flow = RealNVP(2).to(device)
    work = Work()
    n_particles = 32
    fmc = FlowMC(MALA(0.01, Adaptation(0.75, enabled=False)), ISIR(n_particles), n_global=1, n_local=K)

    def step():
        return fmc.run(energy, flow, x, 1 + K, work)

    def limit():
        with torch.no_grad():
            flow.sample(n * (n_particles - 1))
            flow.log_prob(x)
            energy(x.repeat(n_particles, 1))
        _bare_grad(energy, x)
        for _ in range(K):
            _bare_grad(energy, x), torch.randn_like(x)

    _record(benchmark, step, limit, device, n, 1 + K)
