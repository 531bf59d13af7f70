"""An independent audit of a learned energy's mode weights in high dimension (where no grid can integrate it).

The negatives of a training algorithm give the weights its *sampler* sees; when that sampler does not mix,
they say nothing about the weights of the *EBM*. The audit estimates the EBM's own weights with a sampler that
does not depend on the training algorithm and that mixes on the true target of the same family:

    flowMC (000 Alg. 5) on exp(-U_theta): blocks of one i-SIR step (000 Alg. 6) and ``n_local`` MALA steps
    (000 Alg. 4), with the i-SIR proposal q = the equal-weight mixture of N(mu_k, s^2 I) at the target's means,
    s = ``spread`` (1.2: wider than the unit modes so that q covers a model whose modes are a little wider or
    shifted). ``n_chains`` chains start from q, run ``burn_in`` steps (MALA's step adapted toward 0.75
    acceptance) and then ``n_draws`` steps with the step frozen; the weights are the fractions of all kept
    states in each mode's region (nearest mean), the audit's own R-hat is the max over dimensions of arviz's
    rank-normalised split R-hat of the kept chains.

i-SIR leaves exp(-U_theta) invariant for any proposal whose support covers it, so the proposal's equal weights
do not bias the estimate (tests: on U = -log p* the audit recovers p*'s unequal weights, and on a mixture with
reversed weights it recovers those). It only needs the target's means, so it applies to mixture targets. The
samplers are the shared ones of algorithms/mcmc.py; the proposal is the only new piece.

Reported (declared in metrics/catalogue.py, measured by bench/evaluation.py after training where
``audit_chains`` > 0): ``audit_weight[k]``, ``audit_weight_mse`` (wrt p*: is the EBM wrong?),
``neg_weight_mse_vs_audit`` (the negatives wrt the audited EBM: can the training sampler see it?),
``audit_max_rhat`` (did the audit mix?), ``audit_global_accept`` and ``audit_local_accept``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from algorithms.mcmc import ISIR, MALA, Adaptation, FlowMC, frozen
from algorithms.work import Work
from metrics.mixing import rhat
from metrics.modes import sample_mode_weights

#: the proposal's standard deviation relative to the target's unit modes (ours)
SPREAD = 1.2


class MixtureProposal:
    """Equal-weight mixture of N(mu_k, s^2 I): the i-SIR proposal of the audit, with the two methods of a flow
    that i-SIR uses (``sample(n, work) -> (x, log q(x))`` and ``log_prob(x, work)``). Each call counts as one
    ``flow_passes`` per point."""

    def __init__(self, means: Tensor, scale: float):
        self.means, self.scale = means, float(scale)
        self.k, self.d = means.shape

    def log_prob(self, x: Tensor, work: Work | None = None) -> Tensor:
        if work is not None:
            work.flow_passes += x.shape[0]
        sq = ((x[:, None, :] - self.means.to(x)) ** 2).sum(-1)
        log_n = -0.5 * sq / self.scale**2 - self.d * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))
        return torch.logsumexp(log_n, -1) - math.log(self.k)

    def sample(self, n: int, work: Work | None = None) -> tuple[Tensor, Tensor]:
        comp = torch.randint(0, self.k, (n,), device=self.means.device)
        x = self.means[comp] + self.scale * torch.randn(n, self.d, device=self.means.device, dtype=self.means.dtype)
        return x, self.log_prob(x, work)


@dataclass
class Audit:
    """What the audit measured: the EBM's mode weights (None when its chains became non-finite), the kept chains
    (chain, draw, dim), their max split R-hat, and the i-SIR and MALA acceptance rates (None when non-finite)."""

    weights: np.ndarray | None
    chains: np.ndarray
    max_rhat: float
    global_accept: float | None
    local_accept: float | None


def audit_weights(energy, target, n_chains: int = 128, n_draws: int = 200, burn_in: int = 100,
                  n_particles: int = 64, n_local: int = 4, step_size: float = 0.1, spread: float = SPREAD,
                  work: Work | None = None) -> Audit:
    """Mode weights of exp(-U) (``energy(x)`` = U) on ``target``'s mode partition by flowMC with the mixture
    proposal (module docstring). The metrics of it are declared in metrics/catalogue.py (``audit_*``)."""
    work = work or Work()
    p = next(iter(energy.parameters()), None)
    dtype = p.dtype if p is not None else torch.float64
    device = p.device if p is not None else torch.device("cpu")
    proposal = MixtureProposal(target.means.to(device=device, dtype=dtype), spread * float(target.stds.max()))
    sampler = FlowMC(MALA(step_size, Adaptation(0.75)), ISIR(n_particles), n_global=1, n_local=n_local)
    with torch.no_grad():
        x = proposal.sample(n_chains)[0]
    x = sampler.run(energy, proposal, x, burn_in, work)
    with frozen(sampler) as s:  # a fixed Markov kernel for the kept draws; acceptance counted from here
        chains = s.run(energy, proposal, x, n_draws, work, keep_chain=True).detach().cpu().double()
        accept = (s.glob.rate, s.local.rate)
    if not torch.isfinite(chains).all():
        return Audit(None, chains.numpy(), float("nan"), None, None)
    w = sample_mode_weights(target.assign(chains.reshape(-1, chains.shape[-1])), target.n_modes)
    return Audit(w, chains.numpy(), float(rhat(chains.numpy()).max()), *accept)
