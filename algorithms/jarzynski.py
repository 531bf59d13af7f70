"""Jarzynski-weighted sequential Monte Carlo training (003 Prop. 1, eq. 5-13, Alg. 1 and Alg. 2).

Each walker X^i carries a log-weight A^i. With theta_k -> theta_(k+1) the optimiser step and one ULA step
X_(k+1) = X_k - h grad U_k(X_k) + sqrt(2h) xi (003 eq. 5, the suite's own convention), the weights follow

    A_(k+1) = A_k - alpha_(k+1)(X_(k+1), X_k) + alpha_k(X_k, X_(k+1)),                           (eq. 5)
    alpha_k(x, y) = U_k(x) + (y - x) . grad U_k(x) / 2 + h |grad U_k(x)|^2 / 4,                   (eq. 6)

and then E_theta_k[f] = E[f(X_k) e^(A_k)] / E[e^(A_k)] and Z_k = Z_0 E[e^(A_k)] hold exactly (eq. 7) for
any h and however slowly ULA mixes. One iteration (Alg. 1, lines 4-11):

    p^i = e^(A^i) / sum_j e^(A^j)                                                 normalised weights
    D = sum_i p^i dU/dtheta(X^i) - mean_j dU/dtheta(x*_j);  theta <- opt(theta, D)   cross-entropy step
    ULA step of the walkers with U_k, weight update (eq. 5-6) with U_k and U_(k+1)
    if ESS < 1 / (1 + c): resample (A.4 schemes), A <- 0                          (eq. 13)

Mini-batch (Alg. 2, ``walker_batch`` = N' < N): only N' random walkers move; the others keep their
position and get A <- A - U_(k+1)(X) + U_k(X). The identity is exact only when the ULA noise variance is
exactly 2h (003's public MNIST / CIFAR notebooks break this); a temperature belongs in U, not in the noise.

Estimates (eq. 12): log Z~_k = log Z_0 + (log-mean-exp of A accumulated over resamplings), the
cross-entropy H~_k = log Z~_k + mean_j U_k(x*_j), both terms at the same theta_k: the cross-entropy logged
by iteration k is taken before its optimiser step (U_k(x*) is the data energy the gradient uses).
log Z_0 is known when the energy has an exact ``log_z`` (the 003 student) and the walkers start from the
model (``init = "model"``); otherwise only the change of log Z since the start is estimated (logged as
``log_z_change``).

Finite N (measured by this suite, not stated in 003; docs/choices.md has the evidence). Two effects, both
vanishing as N grows; with theta moved by a fixed protocol the estimates are exact (tests/test_jarzynski.py).
1. Feedback. The gradient step and the weights use the same walkers, so theta_(k+1) depends on the noise of
   the walkers it then reweights, while Prop. 1 assumes a protocol independent of them: the log Z increment
   estimate is biased by about -gamma tr Cov_theta(dU/dtheta) / N_eff per iteration (tested: the bias
   scales as 1/N, and the same theta path replayed on fresh walkers is unbiased). For the 003 student in
   d = 50, tr Cov ~ d: at B.1's N = 1e4, K = 8000 and gamma_(a,b) h = 0.0025 (the step of 003's public
   code) the KL estimate ends ~0.1 nat below the exact KL; with gamma_(a,b) = 0.025 as the step, ~1 nat.
2. Mode weights. In d = 50 at h = 0.1 the ULA terms of eq. (6) alone make the weights' variance saturate
   at 1/ESS - 1 ~ 0.14 (for a unit Gaussian mode, A telescopes to h (|X_0 - m|^2 - |X_k - m|^2) / 4), above
   the trigger c = 0.1 but below c = 0.2: at c = 0.1 the walkers are resampled every ~7 iterations (~1200
   times in B.1's 8000), at c >= 0.2 only while theta moves fast (3 times at c = 0.4). Walkers never cross
   between the student's modes, so the weight of each mode lives in the weights alone; each resampling
   freezes their noise into the walker counts, and the weighted mode share that the z-gradient reads
   random-walks (0.017 in logit per 100 iterations at N = 1e4). The learned p_k follows it: at c = 0.1 it
   ended at 0.22-0.34 in seven runs (p* = 0.25), at c = 0.4 at 0.251-0.262 (3 seeds, paper fidelity).

``resample_every = L`` > 0 resamples after every L-th iteration whatever the ESS (003 App. B.1, Fig. 10,
which compares the three schemes at three fixed lags it does not state).

Noise: the move draws xi in the walkers' dtype (float64 for the 003 student), not with the float32-then-cast
draw of ``algorithms.noise`` the other samplers use. The weights are exact for Gaussian noise; a float32 draw
is Gaussian only to ~6e-8 and up to 5.8 standard deviations (a negligible error), but changing the draw moves
the random stream, and tests/test_jarzynski.py's moving-Gaussian check, whose 6 % tolerance on a weighted
variance at ESS ~ 2000 is about two standard errors, fails at its seed with it (it fails at 1 of 6 seeds on
the float64 stream too).

``weight_update = "public_script"`` replaces eq. (6)'s update by the one in the authors' public GMM script,
which keeps the old walker positions by reference and moves the walkers in place, so that both alpha terms
are evaluated at the new positions:

    dA = [U_k(X') + h |grad U_k(X')|^2 / 4] - [U_(k+1)(X') + h |grad U_(k+1)(X')|^2 / 4].

This is not Algorithm 1 as printed: the ULA terms of eq. (6) drop out, the weights barely vary and the walkers
are almost never resampled. It exists to show that this implementation detail, not eq. (6), gives 003 Fig. 6's
p_k = 0.25 at c = 0.1 (docs/choices.md, "The teacher-student experiment of Carbone et al."). Full batch only.

``weighted = False`` freezes the weights at zero: the "unweighted" variant of 003 App. C (walkers from the
initial model, plain ULA), which collapses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from algorithms.base import AT_LEAST_1, POSITIVE, ConfigError, Diverged, TrainingAlgorithm
from algorithms.contrastive import OptimConfig, make_optimizer
from algorithms.energies import has_exact_log_z
from algorithms.resampling import ess_fraction, log_mean_exp, normalised_weights, resample_indices
from algorithms.samplers import ula
from algorithms.tilt import GaussianReference, tilt, zero_last_layer

NON_FINITE = "non-finite loss, walkers or weights"  # why a step diverged (also a stacked seed's)


@dataclass
class JarzynskiConfig(OptimConfig):
    #: number of walkers N and walkers moved per iteration N' (Alg. 2); 0 = all of them (Alg. 1)
    n_walkers: int = field(default=10_000, metadata=AT_LEAST_1)
    walker_batch: int = 0
    #: ULA step size h (x' = x - h grad U + sqrt(2h) xi)
    step_size: float = field(default=0.1, metadata=POSITIVE)
    #: where walkers start; 003: "sampled from rho_theta0" (exact samples of the initial model)
    init: Literal["model", "uniform", "normal", "data"] = "model"
    #: resampling scheme (003 A.4) and trigger: resample when E[w^2]/E[w]^2 - 1 > c, i.e. ESS < 1/(1+c);
    #: 003 §4.1: 1/c_k = 1.05 (c = 0.05); App. B.1 sweeps c in {0.1, 0.2, 0.4, 0.8, 1}; c < 0: never
    resampling: Literal["systematic", "stratified", "multinomial"] = "systematic"
    resample_c: float = 0.05
    #: > 0: resample every this many iterations instead of on the ESS trigger (003 App. B.1, Fig. 10: "three
    #: pre-specified lags between the resampling steps"; 003 does not give the lags); resample_c is then unused
    resample_every: int = 0
    #: False: the unweighted variant (003 App. C)
    weighted: bool = True
    #: "eq6": 003 eq. (5)-(6); "public_script": both alpha terms at the new positions, as in the authors'
    #: public GMM script (see the module docstring); full batch only
    weight_update: Literal["eq6", "public_script"] = "eq6"
    #: > 0: start from a known model for a neural energy: E_theta0 = 0 (last layer zeroed) and the model
    #: tilted by N(0, s^2 I), U = E_theta + |x|^2 / (2 s^2), so rho_theta0 = N(0, s^2 I) is sampled exactly
    #: and log Z_0 = (d/2) log(2 pi s^2) is known (this suite's choice, to give neural energies exact
    #: Jarzynski walkers and an absolute log Z estimate; 003 does not say how its image walkers start)
    reference_std: float = 0.0

    def __post_init__(self):  # checked when the suite is resolved, before anything runs
        if self.resample_every < 0:
            raise ValueError(f"resample_every must be >= 0 (0: the ESS trigger), got {self.resample_every}")
        if self.weight_update == "public_script" and self.walker_batch:
            raise ValueError("weight_update = 'public_script' is full batch only (walker_batch = 0)")


class Jarzynski(TrainingAlgorithm):
    name = "jarzynski"
    paper = "003 Alg. 1 (full batch) and Alg. 2 (mini-batch), eq. (5)-(13)"
    Config = JarzynskiConfig

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        n, s = config.n_walkers, config.reference_std
        known_start = None
        if s > 0:
            if not zero_last_layer(energy):
                raise ConfigError("reference_std needs an energy with a final linear layer to zero")
            tilt(energy, GaussianReference(s))
            d = problem.data.shape[1]
            known_start = 0.5 * d * math.log(2 * math.pi * s**2)
        self.optimizer = make_optimizer(energy, config)
        if known_start is not None and config.init == "model":
            self.x = s * torch.randn_like(self.initial("normal", n))
        else:
            self.x = self.initial(config.init, n)
        self.log_w = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.u, self.g = energy.value_and_grad(self.x, self.work)  # U_0 and grad U_0 at X_0
        self.gg = None  # |grad U_k(X_k)|^2, kept from the last move (full batch)
        if 0 < config.walker_batch < n:
            self.g = None  # mini-batch: gradients are computed for each iteration's moving walkers
        exact = has_exact_log_z(energy) and config.init == "model"
        self.log_z0 = float(energy.log_z().detach()) if exact else None
        if known_start is not None and config.init == "model":
            self.log_z0 = known_start
        self.log_z_shift = 0.0  # log Z_(k_r) / Z_0 at the last resampling
        self.n_resamples = 0
        self._it = 0

    # ----------------------------------------------------------------------------------------------
    def weights(self):
        if not self.config.weighted:
            return torch.full_like(self.log_w, 1.0 / self.log_w.shape[0])
        return normalised_weights(self.log_w)

    def log_z_change(self) -> float:
        """log Z_k - log Z_0 (003 eq. 7, with the resampling bookkeeping of §3.2 step 3)."""
        return self.log_z_shift + log_mean_exp(self.log_w)

    def log_z_estimate(self):
        return None if self.log_z0 is None or not self.config.weighted else self.log_z0 + self.log_z_change()

    def step(self, x_pos):
        cfg, h, n = self.config, self.config.step_size, self.x.shape[0]
        log_z_k = self.log_z_estimate()  # log Z~ at theta_k, from the weights A_k, before theta moves
        p = self.weights()
        mini = 0 < cfg.walker_batch < n
        batch = torch.randperm(n, device=self.device)[: cfg.walker_batch] if mini else None
        xb = self.x[batch] if mini else self.x
        # U_k and grad U_k at the moving walkers (cached from the last iteration in the full-batch case)
        ub, gb = self.energy.value_and_grad(xb, self.work) if mini else (self.u, self.g)

        script = cfg.weight_update == "public_script"
        if script:  # the public script's update: X' by ULA under U_k, then U_k and grad U_k at X' (module docstring)
            x_script = self.x + torch.randn_like(self.x).mul_(math.sqrt(2 * h)).sub_(self.g, alpha=h)
            u_k_new, g_k_new = self.energy.value_and_grad(x_script, self.work)

        # lines 4-6: the empirical cross-entropy gradient (eq. 11) and the optimiser step theta_k -> theta_k+1
        self.optimizer.zero_grad(set_to_none=True)
        u_pos = self.energy(x_pos)
        u_walk = self.energy(self.x)
        loss = u_pos.mean() - (p.to(u_walk.dtype) * u_walk).sum()
        loss.backward()
        self.optimizer.step()
        self.work.energy_evals += x_pos.shape[0] + n
        self.work.grad_evals += x_pos.shape[0] + n

        # lines 7-9: ULA with U_k, then the weight update of eq. (5)-(6) with U_k and U_k+1
        if script:
            xb_new = x_script
            ub_new, gb_new = self.energy.value_and_grad(xb_new, self.work)
            ggb_new = torch.linalg.vecdot(gb_new, gb_new)
            dlog_w = ((u_k_new + 0.25 * h * torch.linalg.vecdot(g_k_new, g_k_new))
                      - (ub_new + 0.25 * h * ggb_new)).double()
        else:
            xb_new, ub_new, gb_new, dlog_w, ggb_new = jarzynski_move_kept(self.energy, xb, ub, gb, h, self.work,
                                                                          None if mini else self.gg)
        if mini:
            rest = torch.ones(n, dtype=torch.bool, device=self.device)
            rest[batch] = False
            with torch.no_grad():
                u_rest = self.energy(self.x[rest])
            self.work.energy_evals += int(rest.sum())
            if cfg.weighted:
                self.log_w[rest] += (self.u[rest] - u_rest).double()  # Alg. 2 line 14
                self.log_w[batch] += dlog_w
            self.u[rest] = u_rest
            self.x[batch], self.u[batch] = xb_new, ub_new
        else:
            if cfg.weighted:
                self.log_w += dlog_w
            self.x, self.u, self.g, self.gg = xb_new, ub_new, gb_new, ggb_new
        self._it += 1
        # the increments dA hold (X' - X) . grad U at every moved walker, so they are finite only where all of
        # X' is (0 * inf is nan): checking them spares a scan of the (N, d) walkers
        if not (torch.isfinite(loss) and torch.isfinite(dlog_w).all() and torch.isfinite(self.log_w).all()):
            raise Diverged(self._it, NON_FINITE)

        # line 11: resampling when the ESS (eq. 13) drops below 1 / (1 + c), or at a fixed lag (Fig. 10)
        ess = ess_fraction(self.log_w)
        if self.resample_due(ess):
            self.resample()
        logs = {"loss": float(loss.detach()), "ess": ess, "n_resamples": float(self.n_resamples),
                "log_z_change": self.log_z_change()}
        if log_z_k is not None:
            # eq. (12) at theta_k: log Z~_k from A_k and the data energy U_k(x*), both before the optimiser step
            logs["cross_entropy_estimate"] = log_z_k + float(u_pos.detach().mean())
        return logs

    def resample_due(self, ess: float) -> bool:
        """Alg. 1 line 11: resample when the ESS fraction (eq. 13) is below 1 / (1 + c), or at the fixed lag
        (Fig. 10); never for the unweighted variant."""
        cfg = self.config
        if cfg.resample_every > 0:
            due = self._it % cfg.resample_every == 0
        else:
            due = cfg.resample_c >= 0 and 1.0 / ess - 1.0 > cfg.resample_c
        return cfg.weighted and due

    def resample(self, generator=None):
        """Resample the walkers (003 A.4) and reset A to 0; ``generator``: the random stream of the draws (default
        torch's global CPU stream; a seed trained in a stack passes its own, algorithms/stacking.py)."""
        self.log_z_shift += log_mean_exp(self.log_w)
        idx = resample_indices(normalised_weights(self.log_w), self.config.resampling, generator)
        self.x, self.u = self.x[idx], self.u[idx]
        if self.g is not None:
            self.g = self.g[idx]
        if self.gg is not None:
            self.gg = self.gg[idx]
        self.log_w = torch.zeros_like(self.log_w)
        self.n_resamples += 1

    # ---- the contract used by the metrics -----------------------------------------------------------
    def negatives(self):
        return self.x

    def negative_weights(self):
        return self.weights()

    def chain_starts(self, n):
        """Equal-weight walkers: n draws from the weighted walkers (multinomial on the weights)."""
        idx = torch.multinomial(self.weights().float(), n, replacement=True)
        return self.x[idx]

    def draw_negatives(self, n):
        return self.chain_starts(n)

    def run_chains(self, x0, n_draws):
        return ula(self.energy, x0, self.config.step_size, n_draws, self.work, keep_chain=True)

    def extra_metrics(self, test_x):
        m = {"ess": ess_fraction(self.log_w), "n_resamples": float(self.n_resamples),
             "log_z_change": self.log_z_change()}
        return {k: v for k, v in m.items() if math.isfinite(v)}


def jarzynski_move(energy, x, u, g, h, work):
    """One ULA step of walkers x under U_k (given u = U_k(x), g = grad U_k(x)) and the Jarzynski log-weight
    increment of 003 eq. (5)-(6), with ``energy`` already at theta_(k+1):

        X' = X + D,   D = -h g + sqrt(2h) xi
        dA = alpha_k(X, X') - alpha_(k+1)(X', X),   alpha(x, y) = U(x) + (y - x).grad U(x)/2 + h|grad U(x)|^2/4

    D is formed once and used for both (X' - X) and (X - X') = -D. Returns (X', U_(k+1)(X'),
    grad U_(k+1)(X'), dA), dA in float64."""
    return jarzynski_move_kept(energy, x, u, g, h, work)[:4]


def jarzynski_move_kept(energy, x, u, g, h, work, gg=None, generators=None):
    """``jarzynski_move`` given also gg = |grad U_k(X)|^2 per walker if known (None: computed), returning
    also |grad U_(k+1)(X')|^2, the next move's gg (the same number at the same walkers and theta).
    Seeds trained together (algorithms/stacking.py): ``energy`` stacked, x (S, N, d), u and gg (S, N), and
    ``generators`` one random stream per seed, slice s of the noise drawn from ``generators[s]``."""
    if generators is None:
        xi = torch.randn_like(x)  # float64 draws: see the module docstring
    else:
        xi = torch.empty_like(x)
        for s, gen in enumerate(generators):  # what randn_like(x[s]) draws on a global stream in gen's state
            xi[s].normal_(generator=gen)
    d = xi.mul_(math.sqrt(2 * h)).sub_(g, alpha=h)
    x_new = x + d
    if gg is None:
        gg = torch.linalg.vecdot(g, g)
    alpha_k = u + 0.5 * torch.linalg.vecdot(d, g) + 0.25 * h * gg
    u_new, g_new = energy.value_and_grad(x_new, work)
    gg_new = torch.linalg.vecdot(g_new, g_new)
    alpha_k1 = u_new - 0.5 * torch.linalg.vecdot(d, g_new) + 0.25 * h * gg_new
    return x_new, u_new, g_new, (alpha_k - alpha_k1).double(), gg_new
