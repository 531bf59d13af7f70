"""CoopFlow: cooperative training of a short-run Langevin flow (the EBM) and a normalizing flow
(004 Alg. 1; Xie et al. 2022), as 004 describes it and as 000 reimplements it.

The EBM is plain, p_theta(x) = exp(-E_theta(x)) / Z (004 eq. 1 with f_theta = -E_theta). One iteration:
    3. x_i ~ p*                                           (the batch given to ``step``)
    4-5. z_i ~ q_0, x^_i = g_alpha(z_i)                    (flow samples)
    6. x~_i = T noise-free Langevin steps from x^_i:  x <- x - h grad E(x)
       (004 eq. 3 without its noise term, as 004 A.2 and 000 App. C.1 run it; 004's delta is h = delta^2 / 2,
       algorithms/samplers.h_from_004_delta)
    7. alpha <- alpha + lr_alpha grad mean log q_alpha(x~_i)      (maximum likelihood on the revised samples)
    8. theta <- theta - lr_theta grad [mean E(x+) - mean E(x~)]    (004 eq. 2)

Settings (004 A.2, Table 3), ``setting``:
* ``"t30"`` / ``"t200"``: both flows from scratch, T = 30 (delta = 0.03) / T = 200 (delta = 0.01);
* ``"pre"``: the flow is first pre-trained on the data by maximum likelihood (``pretrain_steps``), then frozen
  for ``warmup_iters`` iterations while only the EBM learns, then both learn (T = 30, delta = 0.03). 000
  reimplements this one ("frozen for less than 5 % of the total training time", App. C.1).
``n_steps`` / ``delta`` / ``step_size`` override the setting's T and step; ``step_size`` is h itself (000's
Tables 4-5 give h: "ula with 5e-4 step size", 256 steps).

Choices the papers leave open, and ours:
* The flow starts at the identity with base N(0, sigma^2 I), sigma^2 the data's largest per-coordinate
  variance (as the other flow algorithms), instead of 004's data-dependent initialisation of its image flow.
* The per-step clamp of the Langevin update (+-0.1) and the image clamp to [-1, 1] of 004's public code are not
  in the paper: off by default, ``drift_clamp`` / ``image_clamp`` switch them on (measured on 8x8 digits, quick,
  seed 0: they stop Pre's energy runaway at the quick flow learning rate, classifier FID 447 -> 85, and with
  004's flow learning rate 22 -> 12; docs/choices.md "CoopFlow"). The test-time step increase (x 4/3, 004 A.3)
  is not applied: evaluation chains use the training step.
* The revision's length T h decides whether the EBM's energy stays bounded: on the toy targets T h = 0.005
  (10 steps of 000's h = 5e-4) ran away (max |U| 5e5 on eight_gaussians), 000's 256 x 5e-4 = 0.128 did not.
  Its EBM is not a density of the data at any T h tried (004 §4.2 does not claim one): the revision never
  moves a sample between separated modes, so the EBM's relative mode levels are not learned (they wander
  over training while the samples keep the data's weights). They are noise-free, hence deterministic
  (``stochastic_chains = False``): their R-hat is reported as ``max_rhat_deterministic``, which measures
  collapse to fixed points, not mixing.
* Optimisers: Adam, betas (0.5, 0.5) for the EBM and (0.9, 0.999) for the flow (004 A.2); learning rates
  from the suite (000: 1e-3 for both).
* Not persistent: the chains start from fresh flow samples every iteration; ``chain_starts`` are flow samples.
* Images (targets with a ``shape``): the flow is the convolutional multiscale flow of algorithms/image_flows.py,
  a Flow++-sized stand-in for 004 A.1's Flow++ (no variational dequantisation, attention or mixture couplings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from algorithms.base import AT_LEAST_1, NONNEG, POSITIVE, ConfigError, Diverged, TrainingAlgorithm
from algorithms.contrastive import NON_FINITE, OptimConfig, contrastive_update, make_optimizer
from algorithms.flows import FlowConfig, fit_flow, flow_for, uses_image_flow
from algorithms.samplers import h_from_004_delta, ula

#: 004 Table 3 (CIFAR-10): Langevin steps T and training step size delta of each setting
SETTINGS = {"t30": (30, 0.03), "t200": (200, 0.01), "pre": (30, 0.03)}
#: why a step diverged when the flow's likelihood of the revised samples is not finite (also a stacked seed's)
FLOW_NON_FINITE = "non-finite flow likelihood"


@dataclass
class CoopFlowConfig(FlowConfig, OptimConfig):
    beta1: float = 0.5  # 004 A.2, the EBM's Adam
    beta2: float = 0.5
    setting: Literal["t30", "t200", "pre"] = "pre"
    #: Langevin steps T (0 = the setting's) and step: h = ``step_size`` if > 0, else delta^2 / 2 with
    #: delta = ``delta`` if > 0, else the setting's
    n_steps: int = field(default=0, metadata=NONNEG)
    delta: float = field(default=0.0, metadata=NONNEG)
    step_size: float = field(default=0.0, metadata=NONNEG)
    #: the flow's learning rate (0 = ``lr``), Adam (0.9, 0.999)
    flow_lr: float = field(default=0.0, metadata=NONNEG)
    #: setting "pre" only: maximum-likelihood pre-training of the flow, then iterations with it frozen
    pretrain_steps: int = field(default=1024, metadata=NONNEG)
    pretrain_lr: float = field(default=1e-2, metadata=POSITIVE)
    pretrain_batch: int = field(default=256, metadata=AT_LEAST_1)
    warmup_iters: int = field(default=100, metadata=NONNEG)
    energy_reg: float = field(default=0.0, metadata=NONNEG)
    #: 004's public image code, not its paper (off by default): each coordinate of a Langevin step's drift
    #: limited to [-drift_clamp, drift_clamp] (the code: 0.1), and with ``image_clamp`` the revised samples
    #: clamped to the image range [-1, 1] after every step (image targets only)
    drift_clamp: float = field(default=0.0, metadata=NONNEG)
    image_clamp: bool = False


class CoopFlow(TrainingAlgorithm):
    name = "coopflow"
    paper = "004 Alg. 1 (settings T=30, T=200, Pre of 004 A.2)"
    Config = CoopFlowConfig
    #: the evaluation chains are the noise-free Langevin of step 6 (gradient descent on E): deterministic
    stochastic_chains = False

    @classmethod
    def stand_ins(cls, config, target) -> list[str]:
        if uses_image_flow(target):  # 004's image flow is Flow++ (004 A.1), which this suite does not implement
            return ["flow: a Glow-style multiscale flow (algorithms/image_flows.py) standing in for 004's Flow++ "
                    "(no variational dequantisation, attention or mixture couplings)"]
        return []

    @classmethod
    def check_target(cls, config, target):
        if config.image_clamp and getattr(target, "shape", None) is None:
            raise ConfigError("image_clamp clamps pixels to [-1, 1]: image targets only")

    @classmethod
    def cost_changes(cls, config) -> str:
        if config.setting != "pre" or not config.warmup_iters:
            return ""
        return (f"the flow only starts learning after {config.warmup_iters} iterations (CoopFlow Pre): iterations "
                "timed before that leave out its update, and the projection is then a lower bound")

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        cfg = config
        self._clamp = dict(drift_clamp=cfg.drift_clamp, bounds=(-1.0, 1.0) if cfg.image_clamp else None)
        T, delta = SETTINGS[cfg.setting]
        self.n_steps = cfg.n_steps or T
        self.h = cfg.step_size if cfg.step_size > 0 else h_from_004_delta(cfg.delta or delta)
        data = problem.data
        self.flow = flow_for(cfg, data, getattr(problem.target, "shape", None))
        pre = cfg.setting == "pre"
        self.pretrain_loglik = (fit_flow(self.flow, data, cfg.pretrain_steps, cfg.pretrain_lr, cfg.pretrain_batch,
                                         self.work) if pre else float("nan"))
        self.warmup = cfg.warmup_iters if pre else 0
        self.optimizer = make_optimizer(energy, cfg)
        self.flow_opt = torch.optim.Adam(self.flow.parameters(), lr=cfg.flow_lr or cfg.lr)
        self._neg = None
        self._it = 0

    def flow_samples(self, n: int):
        with torch.no_grad():
            return self.flow.sample(n, self.work)[0]

    def sample(self, x0):
        return ula(self.energy, x0, self.h, self.n_steps, self.work, noise=False, **self._clamp)

    def step(self, x_pos):
        cfg = self.config
        x_hat = self.flow_samples(x_pos.shape[0])
        x_neg = self.sample(x_hat)
        self._neg = x_neg
        logs = {}
        if self._it >= self.warmup:  # step 7: the flow learns from the revised samples
            ll = self.flow.log_prob(x_neg, self.work).mean()
            self.flow_opt.zero_grad(set_to_none=True)
            (-ll).backward()
            self.flow_opt.step()
            logs["flow_loglik_neg"] = float(ll.detach())
            if not torch.isfinite(ll):
                raise Diverged(self._it + 1, FLOW_NON_FINITE)
        loss, stats = contrastive_update(self.energy, self.optimizer, x_pos, x_neg, cfg.energy_reg, self.work)
        self._it += 1
        if not torch.isfinite(loss) or not torch.isfinite(x_neg).all():
            raise Diverged(self._it, NON_FINITE)
        with torch.no_grad():
            logs["langevin_shift"] = float((x_neg - x_hat).norm(dim=-1).mean())
        return {**stats, **logs}

    def negatives(self):
        return self._neg

    def chain_starts(self, n):
        return self.flow_samples(n)

    def run_chains(self, x0, n_draws):
        return ula(self.energy, x0, self.h, n_draws, self.work, noise=False, keep_chain=True, **self._clamp)

    def extra_metrics(self, test_x):
        with torch.no_grad():
            ll = self.flow.log_prob(test_x).mean()
        return {"flow_test_loglik": float(ll), "flow_pretrain_loglik": self.pretrain_loglik}
