"""NCE-EBM: the correction of a pre-trained flow learned by noise contrastive estimation (001 §3.5, eq. 10;
Gutmann & Hyvarinen 2010).

Same model as NT-EBM (001 eq. 7, f_theta = -E_theta): p_theta(x) = exp(-E_theta(x)) q_alpha(x) / Z, with the
flow q_alpha pre-trained on the data by maximum likelihood and then fixed. Instead of sampling p_theta, a
logistic regression tells data (positives) from flow samples (negatives) with the log-odds of 001 eq. (10)

    log P(+|x) / P(-|x) = b - E_theta(x),   b = log(rho / (1 - rho)) - log Z(theta) a free bias,

whose optimum is exp(-E_theta) q_alpha prop. to p*. One training iteration:
    1. x+ ~ p* (the batch given to ``step``); x- ~ q_alpha, ``noise_ratio`` times as many
    2. one Adam step on the mean binary cross-entropy of (x+, label 1) and (x-, label 0) over theta and b

Choices the paper leaves open, and ours:
* rho (the share of positives in a batch): 1 / (1 + ``noise_ratio``), 1/2 by default.
* The bias b is a separate scalar parameter, initialised at log(rho / (1 - rho)) (log Z(theta_0) unknown:
  taken as 0), trained with the same optimiser as theta.
* The flow is not improved by the GAN value function (001 mentions it as a possible extension only).
* Pre-training, flow, base and optimiser as NT-EBM (algorithms/nt_ebm.py).
* Sampling the trained model (``run_chains``, R-hat) uses NT-EBM's latent sampler on p(z) (001 eq. 9), the
  natural sampler of this model; the negatives of training (``negatives``, ``draw_negatives``) are the flow's
  samples, which is what NCE trains with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.base import Diverged
from algorithms.contrastive import make_optimizer
from algorithms.nt_ebm import FlowBackboneConfig, FlowBackboneEBM


@dataclass
class NCEEBMConfig(FlowBackboneConfig):
    #: negatives per positive (1 - rho) / rho
    noise_ratio: float = 1.0


class NCEEBM(FlowBackboneEBM):
    name = "nce_ebm"
    paper = "001 §3.5 (eq. 10)"
    Config = NCEEBMConfig

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        if config.noise_ratio <= 0:
            raise ValueError(f"noise_ratio must be positive, got {config.noise_ratio}")
        p = next(energy.parameters())
        self.bias = nn.Parameter(torch.tensor(-math.log(config.noise_ratio), device=p.device, dtype=p.dtype))
        self.optimizer = make_optimizer(energy, config)
        self.optimizer.add_param_group({"params": [self.bias], "lr": config.lr})
        self._neg = None
        self._it = 0

    def step(self, x_pos):
        cfg = self.config
        n_neg = max(1, round(cfg.noise_ratio * x_pos.shape[0]))
        with torch.no_grad():
            x_neg = self.flow.sample(n_neg, self.work)[0]
        self._neg = x_neg
        self.optimizer.zero_grad(set_to_none=True)
        e_pos, e_neg = self.raw(x_pos), self.raw(x_neg)
        logit_pos, logit_neg = self.bias - e_pos, self.bias - e_neg
        loss = (F.binary_cross_entropy_with_logits(logit_pos, torch.ones_like(logit_pos), reduction="sum")
                + F.binary_cross_entropy_with_logits(logit_neg, torch.zeros_like(logit_neg), reduction="sum")
                ) / (x_pos.shape[0] + n_neg)
        total = loss + cfg.energy_reg * (e_pos.pow(2).mean() + e_neg.pow(2).mean()) if cfg.energy_reg else loss
        total.backward()
        self.optimizer.step()
        self.work.energy_evals += x_pos.shape[0] + n_neg
        self.work.grad_evals += x_pos.shape[0] + n_neg
        self._it += 1
        if not torch.isfinite(loss):
            raise Diverged(self._it, "non-finite NCE loss")
        with torch.no_grad():
            acc = ((logit_pos > 0).float().sum() + (logit_neg < 0).float().sum()) / (x_pos.shape[0] + n_neg)
        return {"loss": float(loss.detach()), "energy_pos": float(e_pos.mean().detach()),
                "energy_neg": float(e_neg.mean().detach()), "nce_accuracy": float(acc),
                "nce_bias": float(self.bias.detach())}

    def negatives(self):
        return self._neg

    def chain_starts(self, n):
        with torch.no_grad():
            return self.flow.sample(n, self.work)[0]

    def sample(self, x0):
        return x0  # NCE's negatives are the flow's samples themselves

    def extra_metrics(self, test_x):
        return {**super().extra_metrics(test_x), "nce_bias": float(self.bias.detach())}
