import math
import signal

import pytest
import torch

import bench  # noqa: F401  (loads this suite's own `datasets` package first)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def signals_as_from_a_terminal():
    """Subprocesses start with the stop signals' default actions, as from a terminal, even where the tests run
    with them ignored (a background job of a non-interactive shell ignores SIGINT, ``nohup`` SIGHUP): a child
    inherits an ignored signal, not a handler. For the tests that signal a sweep."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for s, h in old.items():
        if h is signal.SIG_IGN:
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else lambda *_: None)
    yield
    for s, h in old.items():
        signal.signal(s, h)


def smoke_suite(n_iters: int, targets=("four_mode",), algorithms=("ula_ebm",), eval_every: int = 500,
                n_steps: int | None = None) -> str:
    """The text of a suite file whose smoke fidelity trains ``n_iters`` iterations (the toy2d smoke settings
    otherwise): for the tests that need a cell of a chosen length in a real `bench run`."""
    def quoted(names):
        return "[" + ", ".join(f'"{n}"' for n in names) + "]"

    return f"""
description = "smoke cells of {n_iters} iterations"
targets = {quoted(targets)}
algorithms = {quoted(algorithms)}
[fidelity.smoke]
seeds = 1
[fidelity.smoke.defaults]
settings = "smoke"
n_data = 512
batch_size = 32
n_iters = {n_iters}
eval_every = {eval_every}
eval_grid = 40
trace_grid = 20
n_eval_samples = 500
n_chains = 4
n_draws = 8
n_negatives = 64
n_persistent = 64
""" + ("" if n_steps is None else f"n_steps = {n_steps}\n")


class ProtocolOptimizer:
    """Stands in for the optimiser: each step moves theta along a fixed protocol ``path(energy, k)`` instead of
    learning, so that log Z along the way is known in closed form."""

    def __init__(self, energy, path):
        self.energy, self.path, self.k = energy, path, 0

    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        self.k += 1
        self.path(self.energy, self.k)


def moving_gaussian(energy, k):
    """The closed-form protocol of the Jarzynski tests: a QuadraticEnergy at N(0.02 k, (1 + 0.015 k)^2)."""
    with torch.no_grad():
        energy.log_std.fill_(math.log(1 + 0.015 * k))
        energy.mean.fill_(0.02 * k)


@pytest.fixture
def jarzynski_on_protocol():
    """Factory: Jarzynski (003 Alg. 1/2) on the 1-d GMM target whose parameters follow ``path`` (default
    ``moving_gaussian`` on a QuadraticEnergy); keyword arguments are the algorithm's config (step size 0.1 unless
    given). Returns (algorithm, energy, target, data)."""

    def make(energy_factory=None, path=moving_gaussian, n_data=256, **config):
        import algorithms
        import datasets
        from algorithms.base import Problem, build_config
        from algorithms.energies import QuadraticEnergy

        torch.manual_seed(0)
        target = datasets.get_target("gmm1d")
        data = target.sample(n_data, torch.Generator().manual_seed(1)).double()
        energy = energy_factory() if energy_factory else QuadraticEnergy(1).double()
        cls = algorithms.ALGORITHMS["jarzynski"]
        alg = cls(Problem(target, data), energy, build_config(cls.Config, {"step_size": 0.1, **config}, "test"))
        alg.optimizer = ProtocolOptimizer(energy, path)
        return alg, energy, target, data

    return make
