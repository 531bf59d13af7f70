"""EBMs trained with noise-free sampling dynamics, the self-adversarial generator loss, and the ODE flow
trained by maximum likelihood (002: Xiao, Yan, Amit, "EBMs trained with maximum likelihood are generator
models trained with a self-adversarial loss").

002 replaces the Langevin dynamics that draw an EBM's negative samples by deterministic dynamics started
from a fixed latent distribution, x_0 ~ p_0 = N(0, I) (§5: "we initialize the dynamics with noise sampled
from standard Gaussian distribution. We do not use persistent sampling"), so that the sampler is a
generator G_theta with latent x_0:

* ``noise_free_euler``: K steps of gradient descent, eq. (7), x_{k+1} = x_k - (eta/2) grad E(x_k). In this
  suite's convention x' = x - h grad U (+ sqrt(2h) xi) that is h = eta / 2 (samplers.h_from_002_eta);
  ``step_size`` is h. It is the forward-Euler solve of eq. (4) over T = K h.
* ``noise_free_ode``: the ODE of eq. (4) solved by dopri5 over [0, T], eq. (5) (002 A.1: T = 0.2,
  rtol = atol = 1e-5). Its density is the ODE flow's, eq. (6) (algorithms/ode.py).
* ``self_adversarial``: eq. (12), the EBM update plus the W-GAN generator update of eq. (11) on the same
  batch: min_theta E_theta(x) - E_theta(G_sg(theta)(x_0)) + E_sg(theta)(G_theta(x_0)). ``dynamics`` picks
  the generator: "euler" (eq. 7, what 002 uses for its Table 1) or "ode" (eq. 5).
* ``ode_flow_ml``: the reference of §5.1, the same ODE flow (same energy network, same T and solver)
  trained by maximum likelihood of its density, eq. (6): min_theta -mean log p_T(x+).

The EBM update of the first three is the Monte Carlo gradient of eq. (1) with the generator's samples as
negatives: grad_theta [mean E(x+) - mean E(G(x_0))] with G(x_0) detached (algorithms.contrastive).

Where 002 stops gradients (§3, eq. 11-12): the generator term E_sg(theta)(G_theta(x_0)) differentiates
*only through the generation process*: theta enters through the dynamics G_theta (the path x_0 -> x_K,
built with create_graph, 002 A.2), while the energy that scores the generated point is evaluated with its
parameters detached. The contrastive terms differentiate the energy at fixed points: E_theta(x+) and
E_theta(G_sg(theta)(x_0)) with G's output detached. So theta gets exactly
    d/dtheta = [dE/dtheta](x+) - [dE/dtheta](x-) + (dG/dtheta)^T grad_x E(x-),   x- = G_theta(x_0).

Choices 002 leaves open, and ours:
* Latent batch: as many x_0 per iteration as positives (002's batch 800, A.1).
* Euler step size and steps for toys are not given (002 uses the ODE there; Euler with h = 0.1, 40-60 steps
  for images, A.2): the suite uses K h = T, the ODE's horizon, so the two generators are comparable.
* ``generator_weight`` (1 in eq. 12) scales the generator term; eq. (12) is weight 1.
* Differentiating through dopri5: back-propagation through the solver (default) or the adjoint method
  (``adjoint = true``); 002 does not say (its generator loss experiments use Euler).
* The ODE flow's log-likelihood is evaluated with the exact Hessian trace (``eval_trace``), in chunks of
  ``eval_chunk`` points (see algorithms/ode.py); training of ``ode_flow_ml`` uses ``trace``: exact by
  default, Hutchinson (unbiased, cheaper; FFJORD's choice) for higher dimensions or cheaper runs.
* ``run_chains`` (R-hat / ESS after training) has little meaning for deterministic dynamics: Euler
  continues gradient descent for n_draws steps, the ODE returns its path at n_draws times in (0, T]. The
  algorithms declare ``stochastic_chains = False``, and the evaluation reports ``max_rhat_deterministic``
  (collapse to fixed points) instead of R-hat / ESS.
* The noisy baseline of the toy comparison (§5.1 "valid MCMC sampling with noise term", App. B) is
  ``short_run`` with ``init = "normal"`` (configured in bench/suites/selfadv2d.toml); 002's reduced-noise
  Langevin of §5.2 (noise scale below sqrt(2h)) is not implemented.

Work: every gradient of E in the dynamics counts one energy and one gradient evaluation per point (the ODE
density adds d, or 1 with Hutchinson, per function evaluation: algorithms/ode.py); back-propagation through
the dynamics (generator loss, maximum likelihood) is not counted. ``step`` logs ``nfe`` (function
evaluations of the iteration's solve, K for Euler); ``extra_metrics`` reports ``train_nfe_per_iter`` and,
for the ODE generators, ``flow_test_loglik`` (002 §5.1), ``flow_kl`` (targets with a density),
``flow_eval_nfe`` and ``flow_grid_mass`` (the flow's mass inside the target's box, a sanity check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from algorithms.base import AT_LEAST_1, POSITIVE, Diverged, TrainingAlgorithm
from algorithms.contrastive import OptimConfig, contrastive_update, make_optimizer
from algorithms.ode import ODEFlow, SolverFailed, grad_input
from algorithms.samplers import ula
from algorithms.work import Work
from metrics.density import grid


@dataclass
class EulerDynamicsConfig:
    #: K gradient-descent steps of size h = eta/2 (002 eq. 7), from x_0 ~ N(0, I)
    n_steps: int = field(default=20, metadata=AT_LEAST_1)
    step_size: float = field(default=0.01, metadata=POSITIVE)


@dataclass
class ODEDynamicsConfig:
    #: 002 eq. (5) and A.1: dopri5 over [0, T], T = 0.2, rtol = atol = 1e-5
    T: float = field(default=0.2, metadata=POSITIVE)
    rtol: float = field(default=1e-5, metadata=POSITIVE)
    atol: float = field(default=1e-5, metadata=POSITIVE)
    method: Literal["dopri5", "dopri8", "bosh3", "adaptive_heun"] = "dopri5"
    #: Hessian trace in the density (eq. 6) when training through it (ode_flow_ml) and when evaluating it:
    #: exact (d backward passes) or Hutchinson (one Rademacher probe per point and solve)
    trace: Literal["exact", "hutchinson"] = "exact"
    eval_trace: Literal["exact", "hutchinson"] = "exact"
    #: differentiate through a solve by the adjoint method instead of through the solver's operations
    adjoint: bool = False
    #: accepted solver steps per solve before the solve counts as failed (a stiff energy)
    max_steps: int = 1000
    #: points per density evaluation (the step control runs on the whole chunk), and the density grid per
    #: axis for the plots (at most the runner's eval_grid)
    eval_chunk: int = 10_000
    density_grid: int = 100


@dataclass
class NoiseFreeEulerConfig(EulerDynamicsConfig, OptimConfig):
    energy_reg: float = 0.0


@dataclass
class NoiseFreeODEConfig(ODEDynamicsConfig, OptimConfig):
    energy_reg: float = 0.0


@dataclass
class SelfAdversarialConfig(ODEDynamicsConfig, EulerDynamicsConfig, OptimConfig):
    #: the generator G_theta of eq. (12): Euler (eq. 7, 002 Table 1) or the ODE (eq. 5)
    dynamics: Literal["euler", "ode"] = "euler"
    #: weight of the generator term E_sg(theta)(G_theta(x_0)) (eq. 12: 1)
    generator_weight: float = 1.0
    energy_reg: float = 0.0


@dataclass
class ODEFlowMLConfig(ODEDynamicsConfig, OptimConfig):
    pass


def euler_dynamics(energy, x0: Tensor, h: float, n_steps: int, work: Work, create_graph: bool = False) -> Tensor:
    """002 eq. (7)-(8): x_K = (I - h grad E)^K (x_0), h = eta / 2. With ``create_graph`` the result keeps
    its graph to the energy's parameters through every step (002 A.2: "setting the create graph option")."""
    if not create_graph:
        return ula(energy, x0, h, n_steps, work, noise=False)
    x = x0.detach()
    for _ in range(n_steps):
        with torch.enable_grad():
            x = grad_input(x)
            (g,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
        x = x - h * g
        work.energy_evals += x.shape[0]
        work.grad_evals += x.shape[0]
    return x


def stopped_energy(energy, x: Tensor) -> Tensor:
    """E_sg(theta)(x): the energy evaluated with its parameters detached; gradients flow only through x."""
    frozen = {k: v.detach() for k, v in energy.named_parameters()}
    frozen.update(dict(energy.named_buffers()))
    return torch.func.functional_call(energy, frozen, (x,))


class _GeneratorEBM(TrainingAlgorithm):
    """Shared part: the generator G_theta (Euler or ODE) from x_0 ~ N(0, I), the flow density when the
    generator is the ODE, metrics and plot arrays."""

    dynamics: str = "ode"
    #: Euler gradient descent and the ODE are deterministic: the evaluation reports max_rhat_deterministic
    stochastic_chains = False

    @classmethod
    def cost_changes(cls, config) -> str:
        if getattr(config, "dynamics", cls.dynamics) != "ode":
            return ""
        return ("its adaptive ODE solver takes more steps as the energy sharpens (measured on a 002 §5.1 cell at "
                "paper settings, swiss roll: 2.2 iterations per second at the start, 0.38 by iteration 1,470 of "
                "3,000), so the projection is a lower bound")

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        self.optimizer = make_optimizer(energy, config)
        self.flow = None
        if self.dynamics == "ode":
            c = config
            self.flow = ODEFlow(energy, c.T, c.rtol, c.atol, c.method, c.trace, c.adjoint, c.max_steps,
                                c.eval_chunk, self.work)
        self._neg: Tensor | None = None
        self._it = 0
        self._nfe = 0
        self.last_nfe = 0
        self._grid_cache: dict = {}

    # --- the generator --------------------------------------------------------------------------
    def latent(self, n: int) -> Tensor:
        """x_0 ~ p_0 = N(0, I) (002 §5, A.1)."""
        return self.initial("normal", n)

    def generate(self, x0: Tensor, grad: bool = False) -> Tensor:
        """G_theta(x_0); ``grad`` keeps the graph to theta through the dynamics."""
        if self.dynamics == "ode":
            x = self.flow.sample(x0, grad=grad)
            self.last_nfe = self.flow.last_nfe
            return x
        c = self.config
        self.last_nfe = c.n_steps
        return euler_dynamics(self.energy, x0, c.step_size, c.n_steps, self.work, create_graph=grad)

    def _generate_or_diverge(self, x0, grad=False):
        try:
            return self.generate(x0, grad)
        except SolverFailed as e:
            raise Diverged(self._it + 1, f"ODE solver: {e}") from None

    def sample(self, x0):
        with torch.no_grad():
            return self.generate(x0).detach()

    def chain_starts(self, n):
        return self.latent(n)

    def negatives(self):
        return self._neg

    def run_chains(self, x0, n_draws):
        if self.dynamics == "ode":
            return self.flow.trajectory(x0, n_draws).detach().transpose(0, 1)
        return ula(self.energy, x0, self.config.step_size, n_draws, self.work, noise=False, keep_chain=True)

    def _finish(self, loss: Tensor, x_neg: Tensor) -> None:
        self._it += 1
        self._nfe += self.last_nfe
        if not torch.isfinite(loss) or not torch.isfinite(x_neg).all():
            raise Diverged(self._it, "non-finite loss or negative samples")

    # --- evaluation -----------------------------------------------------------------------------
    def _flow_grid(self, box, n: int):
        """log p_T of the ODE flow on the n x n evaluation grid (cell centres, metrics.density.grid)."""
        key = (tuple(map(tuple, box)), n)
        if key not in self._grid_cache:
            pts, area = grid(box, n, dtype=next(self.energy.parameters()).dtype)
            lp = self.flow.log_prob(pts.to(self.device), trace=self.config.eval_trace).detach().double().cpu()
            self._grid_cache[key] = (lp, area)
        return self._grid_cache[key]

    def extra_metrics(self, test_x):
        out = {"train_nfe_per_iter": self._nfe / max(self._it, 1)}
        if self.flow is None:
            return out
        try:
            lp = self.flow.log_prob(test_x, trace=self.config.eval_trace).detach().double()
            out["flow_eval_nfe"] = float(self.flow.last_nfe)
            out["flow_test_loglik"] = float(lp.mean())  # 002 §5.1: nats, averaged over the test samples
            target = self.problem.target
            if target.has_density:
                out["flow_kl"] = float((target.log_prob(test_x.double().cpu()) - lp.cpu()).mean())
            g, area = self._flow_grid(self.problem.box, self.config.density_grid)
            out["flow_grid_mass"] = float(torch.logsumexp(g, 0).exp() * area)  # ~1 when the box holds the flow
        except SolverFailed:
            out["flow_eval_failed"] = 1.0
            out["flow_test_loglik"] = float("nan")
        return out

    def extra_artifacts(self, box, n_grid):
        """``flow_grid_log_density``: the ODE flow's log-density (eq. 6) on the min(n_grid, density_grid)^2 grid
        over box, laid out like the runner's ``grid_log_density`` (002 Fig. 1, column 4). The flow's samples
        (column 2) are the runner's ``negatives``."""
        if self.flow is None:
            return {}
        n = min(n_grid, self.config.density_grid)
        try:
            g, _ = self._flow_grid(box, n)
        except SolverFailed:
            return {}
        return {"flow_grid_log_density": g.float().reshape(n, n).numpy().astype(np.float32)}


class NoiseFreeEuler(_GeneratorEBM):
    """002 §2/§5: EBM update (eq. 1) with negatives from K noise-free Euler steps (eq. 7) from N(0, I)."""

    name = "noise_free_euler"
    paper = "002 eq. (7): EBM with noise-free gradient-descent negatives from N(0, I)"
    Config = NoiseFreeEulerConfig
    dynamics = "euler"

    def step(self, x_pos):
        x_neg = self._generate_or_diverge(self.latent(x_pos.shape[0]))
        self._neg = x_neg
        loss, stats = contrastive_update(self.energy, self.optimizer, x_pos, x_neg, self.config.energy_reg,
                                         self.work)
        self._finish(loss, x_neg)
        return {**stats, "nfe": float(self.last_nfe)}


class NoiseFreeODE(NoiseFreeEuler):
    """002 §2/§5.1, A.1: EBM update (eq. 1) with negatives from the ODE flow (eq. 5, dopri5, T = 0.2)."""

    name = "noise_free_ode"
    paper = "002 eq. (5), A.1: EBM with noise-free ODE (dopri5) negatives from N(0, I)"
    Config = NoiseFreeODEConfig
    dynamics = "ode"


class SelfAdversarial(_GeneratorEBM):
    """002 §3, eq. (12): the EBM update plus the generator update E_sg(theta)(G_theta(x_0)) on one batch."""

    name = "self_adversarial"
    paper = "002 eq. (11)-(12): EBM + W-GAN generator loss through the noise-free dynamics"
    Config = SelfAdversarialConfig

    def __init__(self, problem, energy, config):
        self.dynamics = config.dynamics
        super().__init__(problem, energy, config)

    def loss_terms(self, x_pos: Tensor, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(contrastive, generator, x_gen): E(x+) - E(G_sg(x_0)) averaged, E_sg(G(x_0)) averaged (eq. 12)."""
        x_gen = self._generate_or_diverge(x0, grad=True)
        u_pos = self.energy(x_pos)
        u_neg = self.energy(x_gen.detach())  # E_theta(G_sg(theta)(x_0))
        gen = stopped_energy(self.energy, x_gen).mean()  # E_sg(theta)(G_theta(x_0))
        n = x_pos.shape[0] + 2 * x_gen.shape[0]
        self.work.energy_evals += n
        self.work.grad_evals += n
        self._u = (u_pos, u_neg)
        return u_pos.mean() - u_neg.mean(), gen, x_gen

    def step(self, x_pos):
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        contrastive, gen, x_gen = self.loss_terms(x_pos, self.latent(x_pos.shape[0]))
        u_pos, u_neg = self._u
        total = contrastive + cfg.generator_weight * gen
        if cfg.energy_reg:
            total = total + cfg.energy_reg * (u_pos.pow(2).mean() + u_neg.pow(2).mean())
        total.backward()
        self.optimizer.step()
        x_neg = x_gen.detach()
        self._neg = x_neg
        self._finish(total.detach(), x_neg)
        return {"loss": float(contrastive.detach()), "generator_loss": float(gen.detach()),
                "energy_pos": float(u_pos.mean().detach()), "energy_neg": float(u_neg.mean().detach()),
                "nfe": float(self.last_nfe)}


class ODEFlowML(_GeneratorEBM):
    """002 §5.1 reference: the ODE flow of eq. (5) (same energy network, T, solver and latent N(0, I)) trained
    by maximum likelihood of its density, eq. (6), back-propagating through the backward solve."""

    name = "ode_flow_ml"
    paper = "002 §5.1: the ODE flow trained by maximum likelihood of eq. (6)"
    Config = ODEFlowMLConfig
    dynamics = "ode"

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        self._neg_n = 0

    def step(self, x_pos):
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loglik = self.flow.log_prob(x_pos, grad=True).mean()
        except SolverFailed as e:
            raise Diverged(self._it + 1, f"ODE solver: {e}") from None
        self.last_nfe = self.flow.last_nfe
        (-loglik).backward()
        self.optimizer.step()
        self._neg, self._neg_n = None, x_pos.shape[0]
        self._it += 1
        self._nfe += self.last_nfe
        if not torch.isfinite(loglik):
            raise Diverged(self._it, "non-finite log-likelihood")
        return {"loss": float(-loglik.detach()), "train_loglik": float(loglik.detach()), "nfe": float(self.last_nfe)}

    def negatives(self):
        """The flow's samples (drawn on demand: maximum likelihood needs no negatives)."""
        if self._neg is None and self._neg_n:
            self._neg = self.sample(self.latent(self._neg_n))
        return self._neg

