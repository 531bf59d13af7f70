"""Does an algorithm learn something on a tiny case? The check the suite's own tests run on every built-in
algorithm (tests/test_algorithms.py) and that ``bench test-plugin NAME`` runs on a user's: train a Gaussian
energy U(x) = |x - mu|^2 / (2 s^2) on samples of N(MU, STD^2 I) in 2-D and check that the model's mean and scale
come out right, that the negatives and chains are well formed and that the work is counted."""

from __future__ import annotations

import dataclasses
import math

import torch

from algorithms.base import Problem, build_config
from algorithms.energies import QuadraticEnergy
from algorithms.work import Work
from datasets import GaussianMixture

MU = torch.tensor([1.0, -0.5])
STD = 0.5
BOX = ((-2.0, 3.0), (-3.0, 2.0))
#: tolerances of the learning check: |mean - MU| per coordinate, |std - STD|
MEAN_TOL, STD_TOL = 0.1, 0.075
#: settings of the tiny case, applied to the algorithm's Config where it has the field
PARAMS = dict(lr=0.05, n_steps=20, step_size=0.05, n_persistent=512, n_walkers=512)


def gaussian_target():
    return GaussianMixture(means=[MU.tolist()], stds=STD, weights=[1.0], box=BOX)


def train(cls, n_iters=150, **overrides):
    """Train ``cls`` on the tiny case for n_iters batches of 256; returns (energy, algorithm)."""
    torch.manual_seed(0)
    target = gaussian_target()
    data = target.sample(4096, torch.Generator().manual_seed(1))
    energy = QuadraticEnergy(2)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    params = {k: v for k, v in PARAMS.items() if k in names}
    params.update(overrides)
    alg = cls(Problem(target, data, work=Work()), energy, build_config(cls.Config, params, f"{cls.__name__}.Config"))
    for i in range(n_iters):
        alg.step(data[(i * 256) % 4096:(i * 256) % 4096 + 256])
    return energy, alg


def model_moments(energy, box=BOX, n=200):
    """Mean and standard deviations of the model: the quadratic's parameters, or for a tilted model
    exp(-E) r (algorithms/tilt.py) its moments on a grid."""
    if not getattr(energy, "_tilted", False):
        return energy.mean.detach(), energy.log_std.detach().exp().expand(2)
    axes = [torch.linspace(lo, hi, n) for lo, hi in box]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = torch.softmax(-energy(pts).double(), 0)
    m = (p[:, None] * pts.double()).sum(0)
    return m.float(), (p[:, None] * (pts.double() - m) ** 2).sum(0).sqrt().float()


def learns(energy) -> tuple[bool, str]:
    mean, std = model_moments(energy)
    ok = bool(torch.allclose(mean, MU, atol=MEAN_TOL) and (std - STD).abs().max() < STD_TOL)
    return ok, (f"model mean {[round(v, 3) for v in mean.tolist()]} (true {MU.tolist()}, tolerance {MEAN_TOL}), "
                f"std {[round(v, 3) for v in std.tolist()]} (true {STD}, tolerance {STD_TOL})")


def smoke_test(cls, n_iters: int = 150, **overrides) -> list[tuple[str, bool, str]]:
    """Every check of the tiny case on ``cls``: (check, passed, detail). Training errors are a failed check."""
    checks = []
    try:
        energy, alg = train(cls, n_iters, **overrides)
    except Exception as e:  # noqa: BLE001  (a user's algorithm: its fault is the check's result)
        return [("trains on the tiny case", False, f"{type(e).__name__}: {e}")]
    checks.append(("trains on the tiny case", True, f"{n_iters} iterations of 256 positives"))
    checks.append(("learns the mean and scale of a Gaussian", *learns(energy)))
    w = alg.work
    counted = all(isinstance(v, int) for v in w.as_dict().values()) and w.grad_evals > 0
    hint = "" if counted else (" (energy-gradient evaluations must be counted: use the shared samplers of "
                               "algorithms/samplers.py or Energy.value_and_grad)")
    checks.append(("counts its work", counted, f"{w.as_dict()}{hint}"))
    neg = alg.negatives()
    ok = isinstance(neg, torch.Tensor) and neg.ndim == 2 and neg.shape[1] == 2 and bool(torch.isfinite(neg).all())
    checks.append(("negatives() are finite points (n, 2)", ok, f"shape {tuple(getattr(neg, 'shape', ()))}"))
    try:
        x0 = alg.chain_starts(8)
        before = w.grad_evals
        chains = alg.run_chains(x0, 6)
        shape = (x0.shape[0], 6, 2)
        ok = (x0.ndim == 2 and x0.shape[1] == 2 and tuple(chains.shape) == shape
              and bool(torch.isfinite(chains).all()))
        detail = f"chain_starts(8) {tuple(x0.shape)}, run_chains(x0, 6) {tuple(chains.shape)} (want {shape})"
        moved = bool((chains[:, -1] != chains[:, 0]).any())
        checks.append(("chains are well formed (chain, draw, dim) and finite", ok, detail))
        checks.append(("its sampler moves the chains and counts the work", moved and w.grad_evals > before,
                       f"{w.grad_evals - before} energy-gradient evaluations in run_chains"))
    except Exception as e:  # noqa: BLE001
        checks.append(("chains are well formed (chain, draw, dim) and finite", False, f"{type(e).__name__}: {e}"))
    checks.append(("losses are finite", all(math.isfinite(float(v)) for v in alg.step(alg.problem.data[:256]).values()),
                   "step() returns finite scalars"))
    return checks


__all__ = ["MU", "STD", "gaussian_target", "learns", "model_moments", "smoke_test", "train"]
