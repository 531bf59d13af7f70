"""flowMC-EBM: maximum-likelihood EBM training with negatives from flowMC (000 Alg. 1; Grenioux et al. 2023).

The model is the EBM tilted by the flow's base (000 eq. 6):  p_theta(x) = exp(-E_theta(x)) rho(x) / Z_theta,
rho = N(0, sigma^2 I). A RealNVP T_alpha with the same base is trained alongside so that its density
lambda_alpha stays close to p_theta, and negatives come from flowMC on p_theta: i-SIR global steps with
lambda_alpha as proposal (000 Alg. 6) alternated with MALA local steps (000 Alg. 5, App. C.1).

One training iteration (000 Alg. 1, persistent):
    1. x+ ~ p*                                                    (the batch given to ``step``)
    2. x- = flowMC(p_theta, x~, T_alpha, rho, h, N) from a batch x~ of the persistent state
    3. write the chains' end states back into the persistent state
    4. theta <- theta - gamma_EBM grad [mean E(x+) - mean E(x-)]          (000 eq. 3)
    5. alpha <- alpha + gamma_flow grad mean log lambda_alpha(x-)            (000 Alg. 1 step 5)

Initialisation (000 §3): E_theta0 = 0 by zeroing the energy's last linear layer, and T_alpha0 = Id (the
flow's couplings start at the identity, algorithms/flows.py), so p_theta0 = rho = lambda_alpha0 exactly.
The persistent state starts as samples of the flow ("starting strategy: flow", 000 Tables 4-5), i.e. of rho.

Choices the paper leaves open, and ours:
* sigma of the base / tilt: not given for the 2-D targets; we use 000 App. C.5's rule (sigma^2 = the largest
  per-coordinate variance), computed on the training data. ``base_scale`` > 0 sets it directly.
* Optimisers: not named; Adam for both (``lr`` / ``flow_lr``; 000: the same rate for both).
* The step pattern: 000 App. C.2's "2 global steps between two sequences of 4 local steps" (10 steps) is read
  as blocks of 1 i-SIR step followed by 4 MALA steps, twice (``n_global = 1, n_local = 4, n_steps = 10``);
  Tables 4-5's "1 global step and 24 / 127 mala local steps" are ``n_local = 24 / 127``.
* MALA: adaptive, target acceptance 0.75 (as in the flowMC sampler library), starting at ``step_size`` (C.2: 0.01); the
  step size persists across iterations.
* "Use only last step? no / subsampling by k" (000 Tables 4-5): ``subsample = k`` runs batch / k chains and
  keeps k evenly spaced states of each (the states after steps n/k, 2n/k, ..., n); k = 1 keeps only the last
  step. Table 4's plain "no" is read as Table 5's k = 4.
* Persistent state: a bank of ``n_persistent`` chains (000 C.2: 1024; C.3-C.4: 8192) from which each
  iteration draws batch / k chains, as ULA-EBM does.
* The flow is trained on the same negatives as the EBM, one Adam step per iteration.
* The flow: RealNVP with 4 couplings whose nets have 3 linear layers of 16 hidden units ("MLPs with 16
  neurons on 3 layers (about 1k parameters)", 000 C.2: 1,352 parameters in 2-D).
* Images (000 App. C.6): the flow is the convolutional multiscale flow of algorithms/image_flows.py (a RealNVP
  of about 4M parameters at the paper fidelity, without 000's logit pre-transform), and the regulariser
  ``energy_reg`` acts on the raw energy E_theta, not on the tilted one, as C.6 writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from algorithms.base import AT_LEAST_1, NONNEG, POSITIVE, ConfigError, Diverged, TrainingAlgorithm, bounds
from algorithms.contrastive import OptimConfig, contrastive_update, make_optimizer
from algorithms.flows import FlowConfig, base_sigma, flow_for, uses_image_flow
from algorithms.mcmc import ISIR, MALA, Adaptation, FlowMC, frozen
from algorithms.samplers import ChainBank
from algorithms.tilt import GaussianReference, Raw, tilt, zero_last_layer

NON_FINITE = "non-finite loss, flow likelihood or negative samples"  # why a step diverged (also a stacked seed's)


@dataclass
class FlowMCEBMConfig(FlowConfig, OptimConfig):
    #: flow learning rate (0: the same as ``lr``, as in 000)
    flow_lr: float = field(default=0.0, metadata=NONNEG)
    #: MCMC steps per iteration (global and local steps both count), and their pattern
    n_steps: int = field(default=10, metadata=AT_LEAST_1)
    n_global: int = field(default=1, metadata=NONNEG)
    n_local: int = field(default=4, metadata=NONNEG)
    #: i-SIR pool size (the current state takes one slot)
    n_particles: int = field(default=32, metadata=bounds(2))
    #: initial MALA step h (adapted toward ``target_accept`` by x/÷ ``adapt_factor`` outside ``adapt_tol``)
    step_size: float = field(default=0.01, metadata=POSITIVE)
    target_accept: float = field(default=0.75, metadata=bounds(0, 1, lo_open=True, hi_open=True))
    adapt_factor: float = field(default=1.03, metadata=bounds(1, lo_open=True))
    adapt_tol: float = field(default=0.02, metadata=NONNEG)
    adapt: bool = True
    #: keep k evenly spaced states of each of batch / k chains (1 = only the last step)
    subsample: int = field(default=1, metadata=AT_LEAST_1)
    n_persistent: int = field(default=1024, metadata=AT_LEAST_1)
    init: Literal["flow", "uniform", "data"] = "flow"
    #: start at E = 0 by zeroing the energy's last linear layer (000 §3)
    zero_init: bool = True
    #: lambda * mean(E(x+)^2 + E(x-)^2) on the raw energy E_theta, not the tilted one (000 App. C.6; 0 = off)
    energy_reg: float = field(default=0.0, metadata=NONNEG)

    def __post_init__(self):
        if self.n_global + self.n_local < 1:
            raise ValueError("n_global + n_local must be at least 1")
        if self.subsample >= 1 and self.n_steps % self.subsample:
            raise ValueError(f"subsample must divide n_steps ({self.n_steps}), got {self.subsample}")


class FlowMCEBM(TrainingAlgorithm):
    name = "flowmc_ebm"
    paper = "000 Alg. 1 (flowMC = Alg. 5 with Alg. 6 as global step, MALA = Alg. 4)"
    Config = FlowMCEBMConfig

    @classmethod
    def stand_ins(cls, config, target) -> list[str]:
        if uses_image_flow(target):  # 000 C.6's image flow is a RealNVP with a logit pre-transform
            return ["flow: a Glow-style multiscale flow (algorithms/image_flows.py) standing in for 000 C.6's "
                    "RealNVP (no logit pre-transform)"]
        return []

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        cfg = config
        data = problem.data
        self.flow = flow_for(cfg, data, getattr(problem.target, "shape", None))
        if cfg.zero_init:
            zero_last_layer(energy)
        tilt(energy, GaussianReference(base_sigma(cfg, data)))  # -log rho(x) up to a constant
        self.optimizer = make_optimizer(energy, cfg)
        self.flow_opt = torch.optim.Adam(self.flow.parameters(), lr=cfg.flow_lr or cfg.lr)
        try:
            self.sampler = FlowMC(
                MALA(cfg.step_size, Adaptation(cfg.target_accept, cfg.adapt_factor, cfg.adapt_tol, cfg.adapt)),
                ISIR(cfg.n_particles), cfg.n_global, cfg.n_local)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if cfg.init == "flow":
            with torch.no_grad():
                start = self.flow.sample(cfg.n_persistent, self.work)[0]
        else:
            start = self.initial(cfg.init, cfg.n_persistent)
        self.bank = ChainBank(start)
        self._neg: Tensor | None = None
        self._it = 0

    # ------------------------------------------------------------------ sampling
    def _flowmc(self, x0: Tensor, sampler: FlowMC | None = None) -> tuple[Tensor, Tensor]:
        """Run flowMC from x0; returns (end states, negatives) with the subsampling of 000 Table 5."""
        return flowmc_negatives(sampler or self.sampler, self.energy, self.flow, x0, self.config, self.work)

    def step(self, x_pos):
        cfg = self.config
        n_chains = max(1, x_pos.shape[0] // cfg.subsample)
        idx, x0 = self.bank.draw(min(n_chains, len(self.bank)))
        self.sampler.reset_stats()
        end, x_neg = self._flowmc(x0)
        self.bank.put(idx, end)
        self._neg = x_neg
        if cfg.energy_reg:
            loss, stats = self._update_raw_reg(x_pos, x_neg)
        else:
            loss, stats = contrastive_update(self.energy, self.optimizer, x_pos, x_neg, 0.0, self.work)
        flow_ll = self.flow.log_prob(x_neg.detach(), self.work).mean()
        self.flow_opt.zero_grad(set_to_none=True)
        (-flow_ll).backward()
        self.flow_opt.step()
        self._it += 1
        if not (torch.isfinite(loss) and torch.isfinite(flow_ll) and torch.isfinite(x_neg).all()):
            raise Diverged(self._it, NON_FINITE)
        return {**stats, "flow_loglik_neg": float(flow_ll.detach()), "local_accept": self.sampler.local.rate,
                "global_accept": self.sampler.glob.rate, "step_size": self.sampler.mala.step_size}

    def _update_raw_reg(self, x_pos, x_neg):
        """The EBM step with 000 App. C.6's regulariser lambda mean(E(x-)^2 + E(x+)^2) on the *raw* energy
        E_theta, not on the tilted U = E_theta - log rho (whose |x|^2 / (2 sigma^2) would dominate it on images).
        The contrastive term is on U, as without the regulariser (its theta-gradient is the same)."""
        self.optimizer.zero_grad(set_to_none=True)
        raw = Raw(self.energy)
        e_pos, e_neg = raw(x_pos), raw(x_neg.detach())
        with torch.no_grad():
            t_pos, t_neg = self.energy(x_pos) - e_pos, self.energy(x_neg) - e_neg  # -log rho, theta-free
        u_pos, u_neg = e_pos + t_pos, e_neg + t_neg
        loss = u_pos.mean() - u_neg.mean()
        (loss + self.config.energy_reg * (e_pos.pow(2).mean() + e_neg.pow(2).mean())).backward()
        self.optimizer.step()
        n = x_pos.shape[0] + x_neg.shape[0]
        self.work.energy_evals += 2 * n
        self.work.grad_evals += n
        return loss.detach(), {"loss": float(loss.detach()), "energy_pos": float(u_pos.mean().detach()),
                               "energy_neg": float(u_neg.mean().detach()),
                               "raw_energy_sq": float((e_pos.pow(2).mean() + e_neg.pow(2).mean()).detach())}

    def negatives(self):
        return self._neg

    def chain_starts(self, n):
        return self.bank.draw(min(n, len(self.bank)))[1]

    def sample(self, x0):
        """Negatives as training draws them, with the MALA step frozen at its trained value (mcmc.frozen)."""
        with frozen(self.sampler) as s:
            return self._flowmc(x0, s)[1]

    def run_chains(self, x0, n_draws):
        with frozen(self.sampler) as s:
            return s.run(self.energy, self.flow, x0, n_draws, self.work, keep_chain=True)

    def extra_metrics(self, test_x):
        """The companion flow's test log-likelihood and the sampler's state at the end of training."""
        with torch.no_grad():
            ll = self.flow.log_prob(test_x).mean()
        return {"flow_test_loglik": float(ll), "local_accept": self.sampler.local.rate,
                "global_accept": self.sampler.glob.rate, "step_size": self.sampler.mala.step_size}


def flowmc_negatives(sampler: FlowMC, energy, flow, x0: Tensor, cfg: FlowMCEBMConfig, work, generators=None):
    """000 Alg. 1 step 2: flowMC from x0 ((n, d); seeds trained together, ``generators``: (S, n, d)); returns (end
    states, negatives), the negatives with the subsampling of 000 Table 5 (k evenly spaced states per chain)."""
    k = cfg.subsample
    if k == 1:
        x = sampler.run(energy, flow, x0, cfg.n_steps, work, generators=generators)
        return x, x
    chain = sampler.run(energy, flow, x0, cfg.n_steps, work, keep_chain=True, generators=generators)
    keep = torch.arange(1, k + 1, device=x0.device) * (cfg.n_steps // k) - 1
    return chain[..., -1, :], chain[..., keep, :].reshape(*chain.shape[:-3], -1, chain.shape[-1])
