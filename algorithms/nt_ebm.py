"""NT-EBM: an EBM as a correction of a pre-trained flow, sampled in the flow's latent space
(001 §3.3-3.4, Alg. 1; Nijkamp et al. 2022), as 001 describes it and as 000 reimplements it.

The model is the flow-tilted EBM (001 eq. 7, with f_theta = -E_theta):

    p_theta(x) = exp(-E_theta(x)) q_alpha(x) / Z_theta,

q_alpha the density of a RealNVP x = g_alpha(z), z ~ q_0, pre-trained by maximum likelihood on the data and
then fixed. Pushing p_theta back through g_alpha gives the latent target (001 eq. 9)

    p(z) prop. to exp(-E_theta(g_alpha(z))) q_0(z),

free of g's Jacobian. One training iteration (001 Alg. 1):
    1. update a batch of persistent latent chains z by K MCMC steps on p(z)      (HMC in 001, MALA in 000)
    2. push them forward: x- = g_alpha(z)
    3. x+ ~ p*                                                                   (the batch given to ``step``)
    4. theta <- theta - lr grad [mean E(x+) - mean E(x-)]                          (001 eq. 6)

Choices the papers leave open, and ours:
* The sampler (``sampler``): ``"mala"`` is 000's reimplementation (Tables 4-5: MALA, target acceptance
  0.75, 128 steps, last step only), ``"hmc"`` is 001 A.4 (20 steps of 3 leapfrog steps, initial leapfrog step
  0.15, adapted toward acceptance 0.651). ``step_size`` is MALA's h or HMC's leapfrog epsilon; 000 gives no
  initial MALA step: 0.01 by default, adapted. The step size persists across iterations.
* Pre-training (``pretrain``): ``"reverse_kl"`` is 000's (C.3-C.4: "pretrained for 1024 steps at a 1e-2
  learning rate with the reverse KL objective"), KL(q_alpha || p*) with the target's exact log-density,
  possible only for targets that state one (``has_density``; otherwise a config error when the suite is
  resolved); ``"max_likelihood"`` is 001 §3.3's ("q_alpha can be pre-trained by MLE") on the training data,
  the default since it needs nothing but data. Either way ``pretrain_steps`` Adam steps of ``pretrain_lr`` on
  batches of ``pretrain_batch`` (data points or base draws), counted in Work (flow passes). The result names
  the objective: the config's ``pretrain`` and the metric ``flow_pretrain_reverse_kl`` or
  ``flow_pretrain_loglik``. Reverse KL is mode-seeking: on 000's 2:1 mixture a small flow can settle on the
  heavy mode alone (KL = log 3/2), which the EBM then has to correct.
* The flow is fixed after pre-training (001 Alg. 1 outputs theta only).
* The flow: as flowMC-EBM's (000 "the same as in Appendix C.2"), base N(0, sigma^2 I) with sigma^2 the data's
  largest per-coordinate variance (000 App. C.5's rule) unless ``base_scale`` > 0.
* E_theta's initialisation: the energy as given (001: Xavier); ``zero_init`` starts at E = 0, i.e. at
  p_theta = q_alpha.
* Optimiser: Adam with 001 A.4's betas (0.99, 0.999) by default.
* Persistent chains: a bank of ``n_persistent`` latent states drawn from q_0 (001: "initialized from
  q_alpha"; 000: persistent size 8192), a batch of which is advanced each iteration.
* Images (targets with a ``shape``): the flow is the convolutional multiscale flow of algorithms/image_flows.py
  (001 A.3: Glow, 3 levels, depth 16, width 512, additive couplings, at the paper fidelity of the cifar10 suite);
  the latent chains run on the flattened latent, which has the image's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from algorithms.base import AT_LEAST_1, POSITIVE, ConfigError, Diverged, TrainingAlgorithm
from algorithms.contrastive import NON_FINITE, OptimConfig, contrastive_update, make_optimizer
from algorithms.energies import Energy
from algorithms.flows import FlowConfig, RealNVP, check_pretrain, flow_for, pretrain_flow
from algorithms.mcmc import HMC, MALA, Adaptation, ChainStats, frozen
from algorithms.samplers import ChainBank
from algorithms.tilt import Raw, tilt, zero_last_layer


class LatentEnergy(Energy):
    """U_z(z) = E_theta(g_alpha(z)) - log q_0(z) + const (001 eq. 9 with f = -E). Each evaluation also
    counts one flow pass per point."""

    def __init__(self, raw: Energy, flow: RealNVP):
        super().__init__()
        self.raw, self.flow = raw, flow

    def forward(self, z):
        x, _ = self.flow(z)
        return self.raw(x) - self.flow.base_log_prob(z)

    def value(self, z, work):
        work.flow_passes += z.shape[0]
        return super().value(z, work)

    def value_and_grad(self, z, work):
        work.flow_passes += z.shape[0]
        return super().value_and_grad(z, work)


@dataclass
class FlowBackboneConfig(FlowConfig, OptimConfig):
    beta1: float = 0.99  # 001 A.4
    #: flow pre-training: maximum likelihood on the data (001 §3.3) or reverse KL to the target's density (000)
    pretrain: Literal["max_likelihood", "reverse_kl"] = "max_likelihood"
    pretrain_steps: int = 1024
    pretrain_lr: float = 1e-2
    pretrain_batch: int = 256
    zero_init: bool = False
    #: the latent sampler (NT-EBM's training sampler; NCE-EBM's sampler for chains after training)
    sampler: Literal["mala", "hmc"] = "mala"
    step_size: float = field(default=0.01, metadata=POSITIVE)
    n_leapfrog: int = field(default=3, metadata=AT_LEAST_1)
    #: target acceptance; 0 = the sampler's default (MALA 0.75, 000; HMC 0.651, 001)
    target_accept: float = 0.0
    adapt_factor: float = 1.03
    adapt_tol: float = 0.02
    adapt: bool = True
    energy_reg: float = 0.0


class FlowBackboneEBM(TrainingAlgorithm):
    """What NT-EBM and NCE-EBM share: the pre-trained, fixed flow backbone q_alpha, the tilt of the energy by
    it, and latent-space MCMC on p(z) (001 eq. 9) for sampling the model."""

    @classmethod
    def check_target(cls, config, target):
        try:
            check_pretrain(config.pretrain, target)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        cfg = config
        data = problem.data
        self.check_target(cfg, problem.target)
        self.flow = flow_for(cfg, data, getattr(problem.target, "shape", None))
        self.pretrain_metrics = pretrain_flow(self.flow, cfg.pretrain, problem.target, data, cfg.pretrain_steps,
                                              cfg.pretrain_lr, cfg.pretrain_batch, self.work)
        self.flow.requires_grad_(False)
        if cfg.zero_init:
            zero_last_layer(energy)
        flow = self.flow
        tilt(energy, lambda x: -flow.log_prob(x))
        self.raw = Raw(energy)
        self.latent = LatentEnergy(self.raw, self.flow)
        self.optimizer = make_optimizer(energy, cfg)
        try:
            self.sampler = self.make_sampler(cfg.step_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.stats = ChainStats()

    def make_sampler(self, step_size: float):
        cfg = self.config
        if cfg.sampler == "mala":
            return MALA(step_size, Adaptation(cfg.target_accept or 0.75, cfg.adapt_factor, cfg.adapt_tol, cfg.adapt))
        return HMC(step_size, cfg.n_leapfrog,
                   Adaptation(cfg.target_accept or 0.651, cfg.adapt_factor, cfg.adapt_tol, cfg.adapt))

    def push(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            return self.flow(z, self.work)[0]

    def pull(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.flow.inverse(x, self.work)[0]

    def run_chains(self, x0, n_draws):
        """Latent chains from g^-1(x0) with the sampler's step frozen (mcmc.frozen), pushed forward:
        (chain, draw, dim)."""
        with frozen(self.sampler) as s:
            z = s.run(self.latent, self.pull(x0), n_draws, self.work, keep_chain=True)
        n, k, d = z.shape
        return self.push(z.reshape(n * k, d)).reshape(n, k, d)

    def extra_metrics(self, test_x):
        with torch.no_grad():
            ll = self.flow.log_prob(test_x).mean()
        return {"flow_test_loglik": float(ll), **self.pretrain_metrics}


@dataclass
class NTEBMConfig(FlowBackboneConfig):
    #: MCMC steps per iteration (000 Tables 4-5: 128; 001 A.4: 20 HMC steps)
    n_steps: int = 128
    n_persistent: int = 8192


class NTEBM(FlowBackboneEBM):
    name = "nt_ebm"
    paper = "001 Alg. 1 (latent HMC); 000's reimplementation (latent MALA)"
    Config = NTEBMConfig

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        with torch.no_grad():
            self.bank = ChainBank(self.flow.base_sample(config.n_persistent))
        self._neg: Tensor | None = None
        self._it = 0

    def step(self, x_pos):
        cfg = self.config
        idx, z0 = self.bank.draw(min(x_pos.shape[0], len(self.bank)))
        self.stats = ChainStats()
        z = self.sampler.run(self.latent, z0, cfg.n_steps, self.work, stats=self.stats)
        self.bank.put(idx, z)
        x_neg = self.push(z)
        self._neg = x_neg
        loss, stats = contrastive_update(self.raw, self.optimizer, x_pos, x_neg, cfg.energy_reg, self.work)
        self._it += 1
        if not torch.isfinite(loss) or not torch.isfinite(x_neg).all():
            raise Diverged(self._it, NON_FINITE)
        return {**stats, "local_accept": self.stats.rate, "step_size": self.sampler.step_size}

    def negatives(self):
        return self._neg

    def chain_starts(self, n):
        return self.push(self.bank.draw(min(n, len(self.bank)))[1])

    def sample(self, x0):
        with frozen(self.sampler) as s:
            return self.push(s.run(self.latent, self.pull(x0), self.config.n_steps, self.work))

    def extra_metrics(self, test_x):
        return {**super().extra_metrics(test_x), "local_accept": self.stats.rate, "step_size": self.sampler.step_size}
