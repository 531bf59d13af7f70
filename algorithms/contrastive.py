"""Shared part of the ULA-based maximum-likelihood baselines (PCD / ULA-EBM, CD, short-run).

They differ only in where the negative chains start and whether the end states persist. The update is
the Monte Carlo estimate of the log-likelihood gradient, 000 eq. (2)-(3) / 003 Alg. 3-4 line "empirical
gradient": grad_theta [ mean U(x+) - mean U(x-) ], followed by an optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from algorithms.base import AT_LEAST_1, NONNEG, POSITIVE, ConfigError, Diverged, TrainingAlgorithm, bounds
from algorithms.samplers import ula

BETA = bounds(0, 1, hi_open=True)  # Adam's moment decay rates


@dataclass
class OptimConfig:
    """The optimiser of the energy's parameters (shared by every maximum-likelihood algorithm)."""

    lr: float = field(default=1e-3, metadata=POSITIVE)
    optimizer: Literal["adam", "sgd"] = "adam"
    beta1: float = field(default=0.9, metadata=BETA)
    beta2: float = field(default=0.999, metadata=BETA)
    #: learning rates of named energy parameters that differ from ``lr`` (e.g. 003: {"z": 0.125})
    param_lr: dict[str, float] = field(default_factory=dict)


@dataclass
class ContrastiveConfig(OptimConfig):
    #: ULA steps per training iteration and step size h (x' = x - h grad U + sqrt(2h) xi)
    n_steps: int = field(default=10, metadata=AT_LEAST_1)
    step_size: float = field(default=0.01, metadata=POSITIVE)
    #: lambda * mean(U(x+)^2 + U(x-)^2), the energy-magnitude regulariser of 000 App. C.6 (0 = off)
    energy_reg: float = field(default=0.0, metadata=NONNEG)
    #: multiplies the Langevin noise of the negative chains: < 1 is the reduced-noise heuristic of 002 §5.2
    #: (the chains then sample exp(-U / s^2)); 1 is ULA proper
    noise_scale: float = field(default=1.0, metadata=NONNEG)


def make_optimizer(energy, cfg, named=None):
    """Adam or SGD over the energy's parameters, with per-parameter learning rates from ``param_lr``. ``named``:
    the (name, parameter) pairs to optimise instead (a stacked energy's parameters under its members' names)."""
    named = dict(energy.named_parameters() if named is None else named)
    unknown = sorted(set(cfg.param_lr) - set(named))
    if unknown:
        raise ConfigError(f"param_lr names unknown energy parameters {unknown}; valid: {', '.join(named)}")
    groups = [{"params": [p], "lr": cfg.param_lr.get(n, cfg.lr)} for n, p in named.items()]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return torch.optim.SGD(groups, lr=cfg.lr)


class ContrastiveEBM(TrainingAlgorithm):
    """Negatives by ULA from ``start_chains``; ``keep`` stores the end states (or not)."""

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        self.optimizer = make_optimizer(energy, config)
        self._neg: Tensor | None = None
        self._it = 0

    # --- the two places where the baselines differ -------------------------------------------
    def start_chains(self, x_pos: Tensor) -> Tensor:
        raise NotImplementedError

    def keep(self, x_neg: Tensor) -> None:
        """Called with the end states of the negative chains (persistent algorithms store them)."""

    # --- shared ----------------------------------------------------------------------------------
    def sample(self, x0: Tensor) -> Tensor:
        return ula(self.energy, x0, self.config.step_size, self.config.n_steps, self.work,
                   noise_scale=self.config.noise_scale)

    def step(self, x_pos):
        cfg = self.config
        x_neg = self.sample(self.start_chains(x_pos))
        self.keep(x_neg)
        self._neg = x_neg
        loss, stats = contrastive_update(self.energy, self.optimizer, x_pos, x_neg, cfg.energy_reg, self.work)
        self._it += 1
        # the sum is finite iff every negative is (or it overflows, which counts as divergence too): no (n, d) mask
        if not torch.isfinite(loss) or not torch.isfinite(x_neg.sum()):
            raise Diverged(self._it, "non-finite loss or negative samples")
        return stats

    def negatives(self):
        return self._neg

    def run_chains(self, x0, n_draws):
        return ula(self.energy, x0, self.config.step_size, n_draws, self.work, keep_chain=True)


def contrastive_update(energy, optimizer, x_pos, x_neg, energy_reg, work):
    """One gradient step on L = mean U(x+) - mean U(x-) (+ regulariser): 000 eq. (3). Returns L (detached) and
    the scalars to log."""
    loss, stats = contrastive_step(energy, optimizer, x_pos, x_neg, energy_reg, work)
    return loss, {k: float(v) for k, v in stats.items()}


def contrastive_step(energy, optimizer, x_pos, x_neg, energy_reg, work):
    """``contrastive_update`` with the scalars to log as tensors. For seeds trained together (a stacked energy,
    algorithms/stacking.py: inputs (S, n, d), energies (S, n)) the means are per seed, L has shape (S,) and the step
    is on the sum of the seeds' losses, which gives each seed's parameters exactly its own gradient (and Adam is
    elementwise); the work is counted per seed."""
    stacked = getattr(energy, "stacked", False)

    def mean(u):
        return u.mean(-1) if stacked else u.mean()

    optimizer.zero_grad(set_to_none=True)
    u_pos = energy(x_pos)
    u_neg = energy(x_neg.detach())
    loss = mean(u_pos) - mean(u_neg)
    total = loss + energy_reg * (mean(u_pos.pow(2)) + mean(u_neg.pow(2))) if energy_reg else loss
    (total.sum() if stacked else total).backward()
    optimizer.step()
    n = x_pos.shape[int(stacked)] + x_neg.shape[int(stacked)]
    work.energy_evals += n
    work.grad_evals += n
    return loss.detach(), {"loss": loss.detach(), "energy_pos": mean(u_pos).detach(),
                           "energy_neg": mean(u_neg).detach()}
