"""Seeds trained together: the S seeds of one cell as one stacked model in one process.

At the small sizes of the 2-D suites (256-1,024 chains of a ~10k-parameter MLP) a training step costs mostly the
fixed cost of each tensor operation, not its arithmetic, so S seeds run one after the other cost S times that fixed
cost. Stacked, seed s's tensors are slice s of tensors with a leading seed axis: chains (S, n, d), energies (S, n),
losses (S,), and the S copies of the energy's parameters are tensors (S, ...) evaluated with batched matrix products
(``torch.baddbmm`` / ``torch.bmm``), so each operation of a step is one call for all seeds.

Nothing mixes the seeds, so each seed trains as in its own run:

* seed s's outputs depend on seed s's parameters and inputs only (batched products are independent per batch);
* the optimiser steps on the sum of the seeds' losses, whose gradient in seed s's parameters is seed s's own
  gradient; Adam and SGD are elementwise;
* each seed draws from its own random stream (``SeedRun.generator``): a ``torch.Generator`` in the state torch's
  global stream has in the seed's run alone at the same point (the same initial parameters, data, chain starts,
  batch order, chain draws and Langevin noise, drawn in the same order);
* its own outcome: a seed whose loss or chains turn non-finite leaves the stack (``drop``) and the others go on.

So seed s's numbers are those of its run alone up to floating-point rounding: a batched product may sum in
another order than the single one (tests/test_stacking.py states the tolerance). After training each seed is an
ordinary algorithm again (``member``) and is evaluated as a run of its own.

What stacks (``stackable``), on a plain MLP energy (``MLPEnergy``: Linear layers and LeakyReLU / SiLU, no hooks):
the ULA-based maximum-likelihood baselines (ULA-EBM / PCD, CD, short-run: ``ContrastiveEBM`` whose step and sampler
are the shared ones) without PCD's image augmentation (``StackedContrastive``), Jarzynski's full-batch Alg. 1
with eq. (6)'s weight update, its Gaussian tilt (``reference_std``) included (``StackedJarzynski``), and flowMC-EBM
(000 Alg. 1) with its vector RealNVP, without the raw-energy regulariser of 000 App. C.6 (``StackedFlowMCEBM``: the
flows stacked as ``StackedRealNVP``, flowMC's i-SIR and MALA steps the shared samplers of algorithms/mcmc.py with a
leading seed axis, each seed's own MALA step size, acceptances, particle choices, chain bank and base sigma), and
NT-EBM (001 Alg. 1) with 000's latent MALA and its vector RealNVP (``StackedNTEBM``: the stacked bare energy E_theta
through the fixed, stacked flows, each seed's own pre-training, step size, acceptances and latent chain bank), and
CoopFlow (004 Alg. 1) with its vector RealNVP (``StackedCoopFlow``: the stacked flows' draws revised by the shared
noise-free Langevin on the stacked energy, each seed's own flow pre-training, draws and divergence reason). The
others train one seed per run; so do Jarzynski's mini-batch Alg. 2 (each seed's own random subset of moving
walkers, indexed updates) and the public script's weight update (a comparison variant).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import Tensor, nn

from algorithms import contrastive, flowmc_ebm, jarzynski
from algorithms.contrastive import ContrastiveEBM, contrastive_step, make_optimizer
from algorithms.coopflow import FLOW_NON_FINITE, CoopFlow
from algorithms.energies import _ACT_BACKWARD, Energy, MLPEnergy
from algorithms.flowmc_ebm import FlowMCEBM, flowmc_negatives
from algorithms.flows import RealNVP
from algorithms.jarzynski import Jarzynski, jarzynski_move_kept
from algorithms.mcmc import MALA, ChainStats, FlowMC
from algorithms.nt_ebm import NTEBM, FlowBackboneEBM
from algorithms.resampling import ess_fraction
from algorithms.samplers import ula
from algorithms.tilt import GaussianReference
from algorithms.work import Work


class SeedGaussians:
    """The seeds' own Gaussian tilts N(0, s_k^2 I) (``GaussianReference``, e.g. flowMC-EBM's base fitted to each
    seed's data) on stacked inputs: row k of x (S, n, d) against s_k, with the same numbers as row k's own
    reference (the same float32 divisor and factor)."""

    def __init__(self, refs: list[GaussianReference]):
        self.stds = [r.std for r in refs]
        self._consts: dict = {}  # (dtype, device) -> (s^2 (S, 1), 1 / s^2 (S, 1, 1))

    def rows(self, keep: list[int]) -> SeedGaussians:
        return SeedGaussians([GaussianReference(self.stds[i]) for i in keep])

    def _of(self, x: Tensor) -> tuple[Tensor, Tensor]:
        key = (x.dtype, x.device)
        if key not in self._consts:  # the Python floats rounded to x's dtype, as a scalar operand is
            self._consts[key] = (torch.tensor([s**2 for s in self.stds], dtype=x.dtype, device=x.device).view(-1, 1),
                                 torch.tensor([1.0 / s**2 for s in self.stds], dtype=x.dtype,
                                              device=x.device).view(-1, 1, 1))
        return self._consts[key]

    def __call__(self, x: Tensor) -> Tensor:
        return 0.5 * x.pow(2).sum(-1) / self._of(x)[0]

    def grad(self, x: Tensor) -> Tensor:
        return x * self._of(x)[1]


#: an activation module -> applied in place (the same numbers as the module)
_ACT_INPLACE = {
    nn.LeakyReLU: lambda m, h: torch.nn.functional.leaky_relu_(h, m.negative_slope),
    nn.SiLU: lambda m, h: torch.nn.functional.silu(h, inplace=True),
}


class StackedMLP(nn.Module):
    """S ``MLPEnergy`` members of the same architecture as one module on stacked inputs: ``forward(x)`` with x
    (S, n, d) returns U (S, n), row s computed with member s's parameters. Its parameters are the members' stacked
    along a new first axis, named as the members name them (``named_members``). ``raw``: the members' bare MLPs
    E_theta (``tilt.Raw``), whatever their tilt (NT-EBM's by its flow)."""

    stacked = True

    def __init__(self, members: list[MLPEnergy], raw: bool = False):
        super().__init__()
        layers = [m._plain_layers(tilted_ok=True, raw=raw) if isinstance(m, MLPEnergy) else None for m in members]
        if any(lay is None for lay in layers):
            raise TypeError("only plain MLP energies stack (Linear layers and LeakyReLU / SiLU, no hooks but a tilt "
                            "whose reference states its gradient)")
        first = members[0]
        #: the members' tilt (algorithms/tilt.py): U = MLP / temperature + reference(x), the same for all, or
        #: Gaussians of the seeds' own widths (``SeedGaussians``)
        refs = [getattr(m, "_reference", None) if getattr(m, "_tilted", False) and not raw else None
                for m in members]
        self.reference = refs[0]
        if any(r != self.reference for r in refs):
            if not all(type(r) is GaussianReference for r in refs):
                raise TypeError("the stacked energies are tilted differently")
            self.reference = SeedGaussians(refs)
        if any(type(m) is not type(first) or m.temperature != first.temperature
               or [type(a) for a in m.net] != [type(a) for a in first.net]
               or [(p.shape, p.dtype, p.device) for p in m.parameters()]
               != [(p.shape, p.dtype, p.device) for p in first.parameters()]
               or any(getattr(a, "negative_slope", None) != getattr(b, "negative_slope", None)
                      for a, b in zip(m.net, first.net, strict=True)) for m in members):
            raise TypeError("the stacked energies differ in architecture")
        self.temperature = first.temperature
        self.acts = [back for _, back in layers[0][:-1]]  # (forward, backward) of each hidden activation
        names = {id(p): n for n, p in first.named_parameters()}
        self.names, stacked = [], []
        for k, (lin, _) in enumerate(layers[0]):
            for attr in ("weight", "bias"):
                self.names.append(names[id(getattr(lin, attr))])
                stacked.append(torch.stack([getattr(lay[k][0], attr).detach() for lay in layers]))
        if len(self.names) != len(names):
            raise TypeError("the energy has parameters outside its Linear layers")
        self.params = nn.ParameterList([nn.Parameter(p.clone()) for p in stacked])
        self._buffers_ws: list[Tensor] = []  # ``value``'s workspace

    def __len__(self) -> int:
        return self.params[0].shape[0]

    def __getstate__(self):
        """Pickled (a run's checkpoint, bench/checkpoint.py) with its activations' modules only: their backward
        functions (torch operators) do not pickle, and ``__setstate__`` looks them up again."""
        state = self.__dict__.copy()
        state["acts"] = [act for act, _ in self.acts]
        return state

    def __setstate__(self, state):
        state = {**state, "acts": [_ACT_BACKWARD[type(act)](act) for act in state["acts"]]}
        super().__setstate__(state)

    def named_members(self) -> list[tuple[str, nn.Parameter]]:
        """(the members' name of a parameter, the stacked parameter): what the optimiser's per-parameter learning
        rates (``param_lr``) name."""
        return list(zip(self.names, self.params, strict=True))

    def _layers(self):
        p = self.params
        return [(p[i], p[i + 1]) for i in range(0, len(p), 2)]

    def forward(self, x: Tensor) -> Tensor:
        *hidden, (w, b) = self._layers()
        a = x
        for (wk, bk), (act, _) in zip(hidden, self.acts, strict=True):
            a = act(torch.baddbmm(bk.unsqueeze(1), a, wk.transpose(1, 2)))
        u = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2)).squeeze(-1)
        u = u if self.temperature == 1.0 else u / self.temperature
        return u if self.reference is None else u + self.reference(x).to(u)

    def value(self, x: Tensor, work: Work) -> Tensor:
        """U(x) (S, n), the work counted per seed (n points). Without autograd (flowMC's i-SIR pools: 4,096 points
        per seed at toy2d quick) the hidden layers are computed in two buffers kept between calls, activations in
        place: the same numbers as ``forward``, but fresh (S, n, width) tensors of some MB each are given back to the
        system and page-faulted in again on every call, which cost a quarter of a stacked flowMC-EBM iteration's
        CPU time (toy2d quick four_mode, 4 seeds)."""
        work.energy_evals += x.shape[1]
        if torch.is_grad_enabled():
            return self(x)
        *hidden, (w, b) = self._layers()
        a = x
        for k, ((wk, bk), (act, _)) in enumerate(zip(hidden, self.acts, strict=True)):
            out = self._buffer(k % 2, (*x.shape[:2], bk.shape[1]), x)
            h = torch.baddbmm(bk.unsqueeze(1), a, wk.transpose(1, 2), out=out)
            a = _ACT_INPLACE.get(type(act), lambda m, t: m(t))(act, h)
        u = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2)).squeeze(-1)
        u = u if self.temperature == 1.0 else u / self.temperature
        return u if self.reference is None else u + self.reference(x).to(u)

    def _buffer(self, i: int, shape, like: Tensor) -> Tensor:
        """Workspace ``i`` (0 or 1) of at least ``shape``'s size, as a tensor of that shape."""
        need = math.prod(shape)
        buf = self._buffers_ws[i] if i < len(self._buffers_ws) else None
        if buf is None or buf.numel() < need or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(need, dtype=like.dtype, device=like.device)
            self._buffers_ws[i:i + 1] = [buf]
        return buf[:need].view(shape)

    def value_and_grad(self, x: Tensor, work: Work) -> tuple[Tensor, Tensor]:
        """U(x) (S, n) and grad_x U(x) (S, n, d) by the chain rule written out, as ``MLPEnergy.value_and_grad``
        does per member, with batched products. The work is counted per seed (n points)."""
        return self._chain_rule(x, work, value=True)

    def grad(self, x: Tensor, work: Work) -> Tensor:
        """grad_x U(x) as ``value_and_grad`` gives it, without the output layer's value (``MLPEnergy.grad``)."""
        return self._chain_rule(x, work, value=False)[1]

    def _chain_rule(self, x: Tensor, work: Work, value: bool) -> tuple[Tensor | None, Tensor]:
        *hidden, (w, b) = self._layers()
        with torch.no_grad():
            x = x.detach()
            pre, a = [], x
            for (wk, bk), (act, _) in zip(hidden, self.acts, strict=True):
                h = torch.baddbmm(bk.unsqueeze(1), a, wk.transpose(1, 2))
                pre.append(h)
                a = act(h)
            u = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2)).squeeze(-1) if value else None
            g = w.expand(-1, x.shape[1], -1)
            for (wk, _), h, (_, back) in zip(reversed(hidden), reversed(pre), reversed(self.acts), strict=True):
                g = torch.bmm(back(g, h), wk)
            if self.temperature != 1.0:
                u, g = None if u is None else u / self.temperature, g / self.temperature
            if self.reference is not None:  # as autograd through the tilt's hook forms them
                u, g = None if u is None else u + self.reference(x).to(u), g + self.reference.grad(x)
        work.energy_evals += x.shape[1]
        work.grad_evals += x.shape[1]
        return u, g

    def write_member(self, i: int, energy: MLPEnergy) -> MLPEnergy:
        """Copy the parameters of stack row ``i`` into ``energy`` (a member of the same architecture)."""
        named = dict(energy.named_parameters())
        with torch.no_grad():
            for name, p in self.named_members():
                named[name].copy_(p[i])
        return energy


class StackedLinear(nn.Module):
    """S ``nn.Linear`` members as one layer on stacked inputs (S, n, in) -> (S, n, out), row s by member s's weight
    (S, out, in) and bias (S, out) (a batched product)."""

    def __init__(self, members: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]).clone())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in members]).clone())

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def keep_rows(self, idx: Tensor) -> None:
        self.weight = nn.Parameter(self.weight.detach()[idx].clone())
        self.bias = nn.Parameter(self.bias.detach()[idx].clone())


class StackedRealNVP(RealNVP):
    """S ``RealNVP`` members of the same architecture as one flow on stacked inputs: the couplings' Linear layers are
    ``StackedLinear`` and the base's sigma is per seed ((S, 1, 1)); the maps, densities and draws are RealNVP's own
    code with a leading seed axis (x (S, n, d) -> (S, n, d), log-densities (S, n); ``sample(n, work, generators)``
    draws seed s's base points from ``generators[s]``). The work is counted per seed."""

    def __init__(self, members: list[RealNVP]):
        first = members[0]
        if any(type(m) is not RealNVP or repr(m) != repr(first)
               or [lay.scale_bound for lay in m.layers] != [lay.scale_bound for lay in first.layers]
               or [(p.shape, p.dtype, p.device) for p in m.parameters()]
               != [(p.shape, p.dtype, p.device) for p in first.parameters()] for m in members):
            raise TypeError("only vector RealNVP flows of one architecture stack")
        nn.Module.__init__(self)
        self.dim = first.dim
        self.layers = copy.deepcopy(first.layers)
        for k, layer in enumerate(self.layers):
            for i, mod in enumerate(layer.net):
                if isinstance(mod, nn.Linear):
                    layer.net[i] = StackedLinear([m.layers[k].net[i] for m in members])
        self.register_buffer("base_scale", torch.stack([m.base_scale for m in members]).view(-1, 1, 1).clone())

    def __len__(self) -> int:
        return self.base_scale.shape[0]

    def _linears(self) -> list[tuple[int, int]]:
        return [(k, i) for k, layer in enumerate(self.layers) for i, mod in enumerate(layer.net)
                if isinstance(mod, StackedLinear)]

    def write_member(self, i: int, flow: RealNVP) -> RealNVP:
        """Copy the parameters of stack row ``i`` into ``flow`` (a member of the same architecture)."""
        with torch.no_grad():
            for k, j in self._linears():
                lin, out = self.layers[k].net[j], flow.layers[k].net[j]
                out.weight.copy_(lin.weight[i])
                out.bias.copy_(lin.bias[i])
        return flow

    def keep_rows(self, idx: Tensor) -> None:
        for k, j in self._linears():
            self.layers[k].net[j].keep_rows(idx)
        self.base_scale = self.base_scale[idx]


def stacks(cls, config=None) -> bool:
    """Whether the algorithm class ``cls`` trains stacked (on a plain MLP energy), and with ``config`` whether these
    settings of it do.

    * A ULA-based maximum-likelihood baseline with the shared step and sampler, whose chain starts are written to
      draw from the seed's own stream: the class that defines its ``start_chains`` says so with ``stacks = True``
      (a subclass that draws its chain starts otherwise does not stack by accident).
    * Jarzynski with its own step and resampling (003 Alg. 1, full batch, eq. 6 weight update): Alg. 2's
      mini-batches (``walker_batch``) and the public script's weight update train one seed per run.
    * flowMC-EBM with its own step and sampling (000 Alg. 1), without 000 App. C.6's raw-energy regulariser
      (``energy_reg``, an image setting).
    * NT-EBM with its own step and latent MALA (000's reimplementation); 001's latent HMC trains one seed per run.
    * CoopFlow with its own step, revision and flow draws (004 Alg. 1, any setting)."""
    if not isinstance(cls, type):
        return False
    if issubclass(cls, CoopFlow):
        return cls.step is CoopFlow.step and cls.sample is CoopFlow.sample and cls.flow_samples is CoopFlow.flow_samples
    if issubclass(cls, NTEBM):
        return (cls.step is NTEBM.step and cls.make_sampler is FlowBackboneEBM.make_sampler
                and (config is None or config.sampler == "mala"))
    if issubclass(cls, FlowMCEBM):
        return (cls.step is FlowMCEBM.step and cls._flowmc is FlowMCEBM._flowmc
                and (config is None or config.energy_reg == 0))
    if issubclass(cls, Jarzynski):
        return (cls.step is Jarzynski.step and cls.resample is Jarzynski.resample
                and (config is None or (not 0 < config.walker_batch < config.n_walkers
                                        and config.weight_update == "eq6")))
    owner = next((c for c in cls.__mro__ if "start_chains" in c.__dict__), None)
    return (issubclass(cls, ContrastiveEBM) and cls.step is ContrastiveEBM.step
            and cls.sample is ContrastiveEBM.sample and owner is not None and owner.__dict__.get("stacks", False)
            and (config is None or getattr(config, "augment", "none") == "none"))


def stackable(alg) -> bool:
    """Whether ``alg`` (an algorithm built for one seed) trains stacked: its class and settings stack (``stacks``)
    and its energy is a plain MLP (``MLPEnergy``: Linear layers and LeakyReLU / SiLU, no hooks; Jarzynski's
    Gaussian tilt of ``reference_std`` and flowMC-EBM's by its base are allowed, NT-EBM's by its flow too: its stack
    is of the bare E_theta); flowMC-EBM's, NT-EBM's and CoopFlow's flow is the vector RealNVP."""
    tilted = isinstance(alg, (Jarzynski, FlowMCEBM))
    return (stacks(type(alg), getattr(alg, "config", None)) and isinstance(alg.energy, MLPEnergy)
            and alg.energy._plain_layers(tilted_ok=tilted, raw=isinstance(alg, NTEBM)) is not None
            and (not isinstance(alg, (FlowMCEBM, NTEBM, CoopFlow)) or type(alg.flow) is RealNVP))


def stack_of(members, generators, cpu_generators=None):
    """The stack of these seeds' algorithms (``StackedContrastive``, ``StackedJarzynski``, ``StackedFlowMCEBM``,
    ``StackedNTEBM`` or ``StackedCoopFlow``)."""
    if members and isinstance(members[0], Jarzynski):
        return StackedJarzynski(members, generators, cpu_generators)
    if members and isinstance(members[0], FlowMCEBM):
        return StackedFlowMCEBM(members, generators)
    if members and isinstance(members[0], NTEBM):
        return StackedNTEBM(members, generators)
    if members and isinstance(members[0], CoopFlow):
        return StackedCoopFlow(members, generators)
    return StackedContrastive(members, generators)


def _carry_optimizer(old, new, idx: Tensor) -> None:
    """Give the optimiser ``new`` (over the kept rows' parameters, in the order of ``old``'s) the learning rates of
    ``old`` and the kept rows ``idx`` of its per-parameter state (Adam's moments; its step count as it is)."""
    for g_old, g_new in zip(old.param_groups, new.param_groups, strict=True):
        g_new["lr"] = g_old["lr"]
    old_params = [p for g in old.param_groups for p in g["params"]]
    new_params = [p for g in new.param_groups for p in g["params"]]
    for p_old, p_new in zip(old_params, new_params, strict=True):
        state = old.state.get(p_old)
        if state:
            new.state[p_new] = {k: v[idx].clone() if torch.is_tensor(v) and v.dim() > 0 else v.clone()
                                if torch.is_tensor(v) else v for k, v in state.items()}


class _Stack:
    """What every stack shares: the seeds' algorithms (``members``, built as in their runs alone), their random
    streams, the stacked energy and one optimiser over it, and dropping seeds."""

    raw = False  # the stacked energy is the members' bare MLP E_theta, without their tilt (NT-EBM's by its flow)

    def __init__(self, members, generators):
        if not all(stackable(m) for m in members) or len({type(m) for m in members}) != 1 \
                or any(dataclasses.asdict(m.config) != dataclasses.asdict(members[0].config) for m in members):
            raise TypeError("these algorithms do not stack (different classes or settings, or not stackable)")
        self.members, self.config = list(members), members[0].config
        self.generators = list(generators)
        if len(self.generators) != len(self.members):
            raise ValueError("one generator per seed")
        self.energy = StackedMLP([m.energy for m in self.members], raw=self.raw)
        self.optimizer = make_optimizer(None, self.config, named=self.energy.named_members())
        self.work = Work()  # one seed's work (every seed in the stack does the same)

    def __len__(self) -> int:
        return len(self.members)

    def why(self, i: int) -> str:
        """Why seed ``i`` of the last ``step`` is not finite, as its run alone says it (``non_finite``; CoopFlow's
        reason depends on what turned non-finite first)."""
        return self.non_finite

    def _add_work(self, before: dict) -> None:
        """Add the work since ``before`` (``self.work.as_dict()``) to each seed's own counter."""
        for m in self.members:
            for k, v in self.work.as_dict().items():
                setattr(m.work, k, getattr(m.work, k) + v - before[k])

    def drop(self, keep: list[int]) -> None:
        """Keep only the seeds at stack rows ``keep`` (in order): their parameters, Adam moments, members and
        state (``_keep_rows``)."""
        old, old_params = self.optimizer, list(self.energy.params)
        idx = torch.tensor(keep, device=old_params[0].device)
        self.members = [self.members[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]
        with torch.no_grad():
            for k, p in enumerate(old_params):
                self.energy.params[k] = nn.Parameter(p.detach()[idx].clone())
        if isinstance(self.energy.reference, SeedGaussians):
            self.energy.reference = self.energy.reference.rows(keep)
        self.optimizer = make_optimizer(None, self.config, named=self.energy.named_members())
        _carry_optimizer(old, self.optimizer, idx)
        self._keep_rows(keep, idx)
        if self._neg is not None:
            self._neg = self._neg[idx]

    def _keep_rows(self, keep: list[int], idx: Tensor) -> None:
        """Keep the rows ``idx`` of the stack's own per-seed state besides its energy and negatives."""

    _neg: Tensor | None = None  # the last negatives (S, n, d), where the members keep theirs

    def member(self, i: int):
        """Seed ``i`` of the stack as its own algorithm, in the state its run alone would have now: its energy's
        parameters (and whatever else of it the stack holds: ``_write_member``) and its last negatives; its chains,
        walkers, bank and sampler state are already its own (NT-EBM's flow too: fixed since its pre-training). Its
        optimisers are not kept up to date: the evaluation never steps them."""
        m = self.members[i]
        self.energy.write_member(i, m.energy)
        self._write_member(i, m)
        if self._neg is not None:
            m._neg = self._neg[i]
        return m

    def _write_member(self, i: int, m) -> None:
        """Write back what of seed ``i`` the stack holds besides its energy (flowMC-EBM: its flow)."""


class StackedContrastive(_Stack):
    """The S seeds of a ``ContrastiveEBM`` (ULA-EBM / PCD, CD, short-run) trained as one: their negatives by ULA on
    the stacked energy from stacked chain starts, one optimiser over the stacked parameters (000 Alg. 3 / 003 Alg.
    3-4 for each seed). ``members`` are the seeds' own algorithms, built as in their runs alone; each keeps its own
    chain state (bank, walkers: its ``start_chains`` and ``keep`` run per seed, drawing from the seed's
    ``generator``), and ``member(i)`` makes it the whole algorithm of its seed again for the evaluation."""

    non_finite = contrastive.NON_FINITE  # the reason a seed's run alone gives when ``step`` says it is not finite

    def __init__(self, members: list[ContrastiveEBM], generators: list[torch.Generator]):
        super().__init__(members, generators)
        self._neg: Tensor | None = None

    def step(self, x_pos: Tensor) -> tuple[list[dict[str, float]], list[bool]]:
        """One training iteration of every seed in the stack on its positives x_pos[s] ((S, batch, d)). Returns the
        scalars to log and whether the seed is still finite (its run alone would raise ``Diverged`` here), per
        seed. The iteration's work is added to each seed's own counter."""
        cfg, before = self.config, self.work.as_dict()
        try:  # each seed's chain starts from its own stream; outside a step its draws are the global stream's
            for m, g in zip(self.members, self.generators, strict=True):
                m.generator = g
            x0 = torch.stack([m.start_chains(x) for m, x in zip(self.members, x_pos, strict=True)])
        finally:
            for m in self.members:
                m.generator = None
        x_neg = ula(self.energy, x0, cfg.step_size, cfg.n_steps, self.work, noise_scale=cfg.noise_scale,
                    generators=self.generators)
        for m, x in zip(self.members, x_neg, strict=True):
            m.keep(x)
            m._it += 1
        self._neg = x_neg
        loss, stats = contrastive_step(self.energy, self.optimizer, x_pos, x_neg, cfg.energy_reg, self.work)
        ok = (torch.isfinite(loss) & torch.isfinite(x_neg.sum((1, 2)))).tolist()
        self._add_work(before)
        names = list(stats)
        cols = torch.stack([stats[k] for k in names], 1).tolist()
        return [dict(zip(names, row, strict=True)) for row in cols], ok



class StackedJarzynski(_Stack):
    """The S seeds of ``Jarzynski`` (003 Alg. 1, full batch) trained as one: walkers (S, N, d), log-weights A
    (S, N), the cross-entropy step on the sum of the seeds' weighted losses (eq. 11: seed s's gradient is its own),
    one ULA move and eq. (5)-(6) weight update of all walkers on the stacked energy, the noise of slice s drawn
    from ``generators[s]``. What is per seed stays with the seed's own algorithm (``members[s]``, whose walker
    state are views of row s): its ESS (eq. 13), resampling decision and resampling (``Jarzynski.resample``, its
    uniforms drawn from ``cpu_generators[s]``, the stream its run alone draws them from), ``n_resamples``, log Z
    bookkeeping and logged scalars, in the order of its run alone.

    Rounding grows here. With more than one seed the batched products round otherwise than the single ones (the
    energy's last layer, a matrix-vector product, from the first iteration; weight gradients from the second), and
    two things amplify it. Adam is scale-free: the energy's last bias b has gradient 1 - sum_i p_i = 0 in the
    weighted loss up to rounding, which Adam turns into steps of about its learning rate, so b, and the model's
    log Z with it (``log_z_change``; b cancels from the weights, the loss and the cross-entropy estimate), walk
    apart by ~lr per iteration. And resampling turns a weight that differs in its last bits into another walker
    picked now and then. Measured on toy2d quick four_mode (seed 0 alone vs in a stack of 4, Adam): the ESS
    differs by 1e-13 relative after 5 iterations, 1e-7 after 25, 1e-3 after 40 (8 resamplings in); after 1,200
    iterations the seed is another run of the same distribution (455 vs 460 resamplings; its mode weights differ
    as much as two seeds' do). With SGD and without resampling the difference stays at 1e-8 over 60 iterations; a
    stack of one seed gives its run alone exactly (all 1,200 iterations). Two BLAS libraries would do the same."""

    non_finite = jarzynski.NON_FINITE

    def __init__(self, members: list[Jarzynski], generators: list[torch.Generator],
                 cpu_generators: list[torch.Generator] | None = None):
        super().__init__(members, generators)
        self.cpu_generators = list(cpu_generators or generators)
        if len(self.cpu_generators) != len(self.members):
            raise ValueError("one CPU generator per seed")
        self.x, self.u, self.g, self.log_w = (torch.stack([getattr(m, k) for m in self.members])
                                              for k in ("x", "u", "g", "log_w"))
        self.gg = None if members[0].gg is None else torch.stack([m.gg for m in self.members])
        self._bind()

    def _bind(self) -> None:
        """Make each seed's walker state the views of its row."""
        for s, m in enumerate(self.members):
            m.x, m.u, m.g, m.log_w = self.x[s], self.u[s], self.g[s], self.log_w[s]
            m.gg = None if self.gg is None else self.gg[s]

    def step(self, x_pos: Tensor) -> tuple[list[dict[str, float]], list[bool]]:
        """One iteration of Alg. 1 (lines 4-11) for every seed on its positives x_pos[s] ((S, batch, d)): returns
        the scalars its run alone logs and whether it is still finite (its run alone raises ``Diverged`` here, before
        resampling), per seed. The iteration's work is added to each seed's own counter."""
        cfg, h, n, before = self.config, self.config.step_size, self.x.shape[1], self.work.as_dict()
        log_z_k = [m.log_z_estimate() for m in self.members]  # at theta_k, before theta moves
        p = torch.stack([m.weights() for m in self.members])
        self.optimizer.zero_grad(set_to_none=True)
        u_pos = self.energy(x_pos)
        u_walk = self.energy(self.x)
        loss = u_pos.mean(-1) - (p.to(u_walk.dtype) * u_walk).sum(-1)
        loss.sum().backward()
        self.optimizer.step()
        self.work.energy_evals += x_pos.shape[1] + n
        self.work.grad_evals += x_pos.shape[1] + n
        self.x, self.u, self.g, dlog_w, self.gg = jarzynski_move_kept(self.energy, self.x, self.u, self.g, h,
                                                                      self.work, self.gg, self.generators)
        if cfg.weighted:
            self.log_w += dlog_w
        self._bind()
        self._add_work(before)
        ok = (torch.isfinite(loss) & torch.isfinite(dlog_w).all(-1) & torch.isfinite(self.log_w).all(-1)).tolist()
        losses, u_pos_mean, logs = loss.detach().tolist(), u_pos.detach().mean(-1).tolist(), []
        for s, m in enumerate(self.members):
            m._it += 1
            if not ok[s]:
                logs.append({"loss": losses[s]})
                continue
            ess = ess_fraction(m.log_w)
            if m.resample_due(ess):
                m.resample(self.cpu_generators[s])
                with torch.no_grad():
                    for k in ("x", "u", "g", "gg", "log_w"):
                        getattr(self, k)[s] = getattr(m, k)
                self._bind()
            row = {"loss": losses[s], "ess": ess, "n_resamples": float(m.n_resamples),
                   "log_z_change": m.log_z_change()}
            if log_z_k[s] is not None:
                row["cross_entropy_estimate"] = log_z_k[s] + u_pos_mean[s]
            logs.append(row)
        return logs, ok

    def _keep_rows(self, keep, idx):
        self.cpu_generators = [self.cpu_generators[i] for i in keep]
        self.x, self.u, self.g, self.log_w = self.x[idx], self.u[idx], self.g[idx], self.log_w[idx]
        self.gg = None if self.gg is None else self.gg[idx]
        self._bind()


class _LearnedFlowStack(_Stack):
    """A stack whose seeds each learn a vector RealNVP by maximum likelihood on their negatives (flowMC-EBM's 000 Alg. 1
    step 5, CoopFlow's 004 Alg. 1 step 7): the flows stacked (``StackedRealNVP``), one Adam over them."""

    def __init__(self, members, generators):
        super().__init__(members, generators)
        self.flow = StackedRealNVP([m.flow for m in self.members])
        self.flow_opt = self._flow_adam()

    def _flow_adam(self) -> torch.optim.Adam:
        return torch.optim.Adam(self.flow.parameters(), lr=self.config.flow_lr or self.config.lr)

    def _flow_step(self, x_neg: Tensor) -> Tensor:
        """One Adam step on the sum of the seeds' losses -mean log q_alpha(x_neg[s]) (each seed's own gradient);
        returns the seeds' mean log-likelihoods (S,)."""
        ll = self.flow.log_prob(x_neg.detach(), self.work).mean(-1)
        self.flow_opt.zero_grad(set_to_none=True)
        (-ll).sum().backward()
        self.flow_opt.step()
        return ll.detach()

    def _write_member(self, i, m):
        self.flow.write_member(i, m.flow)

    def _keep_rows(self, keep, idx):
        old = self.flow_opt
        self.flow.keep_rows(idx)
        self.flow_opt = self._flow_adam()
        _carry_optimizer(old, self.flow_opt, idx)


class StackedFlowMCEBM(_LearnedFlowStack):
    """The S seeds of ``FlowMCEBM`` (000 Alg. 1) trained as one: each iteration draws every seed's chain starts from
    its own bank (``generators[s]``), runs flowMC (000 Alg. 5 with Alg. 6 as global step: ``FlowMC.run`` with a
    leading seed axis, on the stacked energy and the stacked flow ``StackedRealNVP``) with each seed's own MALA step
    size adapted to its own acceptances and its own i-SIR particle choices, then one Adam step over the stacked EBM
    (eq. 3, each seed's own gradient) and one over the stacked flow (Alg. 1 step 5: the sum of the seeds'
    maximum-likelihood losses). What is per seed stays with the seed's own algorithm (``members[s]``): its bank,
    MALA step size and acceptance counts (copied back after every step), iteration count and last negatives.

    Rounding. The stacked energy's gradient is the chain rule written out (``StackedMLP.value_and_grad``), the seed's
    run alone takes it by autograd through the tilt, and batched products may round otherwise than single ones;
    Metropolis-Hastings and i-SIR decisions turn a last-bit difference into another state now and then. Measured
    (toy2d smoke, 12 iterations, 3 seeds): bitwise equal to the runs alone; toy2d quick four_mode, seed 0 alone vs in
    a stack of 4: traces within 5e-6 relative after 100 iterations, another run of the same distribution after 150
    (its final mode-weight MSE 0.0027 against 0.0038 alone; 8 seeds alone spread 0.0050 +- 0.0049)."""

    non_finite = flowmc_ebm.NON_FINITE

    def __init__(self, members: list[FlowMCEBM], generators: list[torch.Generator]):
        super().__init__(members, generators)
        first = members[0].sampler
        # the seeds' samplers as one: per-seed step sizes and acceptance counts are set from the members each step
        self.sampler = FlowMC(MALA([], first.mala.adaptation), first.isir, first.n_global, first.n_local)
        self._neg: Tensor | None = None

    def step(self, x_pos: Tensor) -> tuple[list[dict[str, float]], list[bool]]:
        """One iteration of 000 Alg. 1 for every seed on its positives x_pos[s] ((S, batch, d)): the scalars its
        run alone logs and whether it is still finite (its run alone raises ``Diverged`` here), per seed. The
        iteration's work is added to each seed's own counter."""
        cfg, before, s = self.config, self.work.as_dict(), self.sampler
        n_chains = max(1, x_pos.shape[1] // cfg.subsample)
        draws = [m.bank.draw(min(n_chains, len(m.bank)), g) for m, g in zip(self.members, self.generators,
                                                                             strict=True)]
        s.mala.step_size = [m.sampler.mala.step_size for m in self.members]
        s.local, s.glob = [ChainStats() for _ in self.members], [ChainStats() for _ in self.members]
        end, x_neg = flowmc_negatives(s, self.energy, self.flow, torch.stack([x for _, x in draws]), cfg,
                                      self.work, self.generators)
        for k, (m, (idx, _)) in enumerate(zip(self.members, draws, strict=True)):
            m.bank.put(idx, end[k])
            m.sampler.mala.step_size, m.sampler.local, m.sampler.glob = s.mala.step_size[k], s.local[k], s.glob[k]
            m._it += 1
        self._neg = x_neg
        loss, stats = contrastive_step(self.energy, self.optimizer, x_pos, x_neg, 0.0, self.work)
        flow_ll = self._flow_step(x_neg)
        self._add_work(before)
        ok = (torch.isfinite(loss) & torch.isfinite(flow_ll) & torch.isfinite(x_neg).flatten(1).all(1)).tolist()
        names = list(stats)
        cols = torch.stack([stats[k] for k in names] + [flow_ll], 1).tolist()
        return [{**dict(zip(names, row[:-1], strict=True)), "flow_loglik_neg": row[-1],
                 "local_accept": m.sampler.local.rate, "global_accept": m.sampler.glob.rate,
                 "step_size": m.sampler.mala.step_size} for row, m in zip(cols, self.members, strict=True)], ok


class StackedLatentEnergy(Energy):
    """NT-EBM's latent energy U_z(z) = E_theta(g_alpha(z)) - log q_0(z) (001 eq. 9, ``nt_ebm.LatentEnergy``) of S
    seeds on stacked latents z (S, n, d): the stacked bare energy through the stacked flow, differentiated by
    autograd as each seed's run alone differentiates its own. The work is counted per seed (n points)."""

    stacked = True

    def __init__(self, raw: StackedMLP, flow: StackedRealNVP):
        super().__init__()
        self.raw, self.flow = raw, flow

    def forward(self, z: Tensor) -> Tensor:
        x, _ = self.flow(z)
        return self.raw(x) - self.flow.base_log_prob(z)

    def value_and_grad(self, z: Tensor, work: Work) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            u = self(z)
            (g,) = torch.autograd.grad(u.sum(), z)
        work.flow_passes += z.shape[1]
        work.energy_evals += z.shape[1]
        work.grad_evals += z.shape[1]
        return u.detach(), g

    def value(self, z: Tensor, work: Work) -> Tensor:
        work.flow_passes += z.shape[1]
        work.energy_evals += z.shape[1]
        return self(z)


class StackedNTEBM(_Stack):
    """The S seeds of ``NTEBM`` (001 Alg. 1 with 000's latent MALA) trained as one: each iteration draws every seed's
    latent chain starts from its own bank (``generators[s]``), runs MALA on the stacked latent energy
    (``StackedLatentEnergy``: the stacked bare energy E_theta through the stacked flow ``StackedRealNVP``) with each
    seed's own step size adapted to its own acceptances, pushes the chains forward through each seed's flow, and
    takes one optimiser step over the stacked E_theta (001 eq. 6, each seed's own gradient). The flows are fixed
    (001 Alg. 1), so there is no flow optimiser; each seed's flow pre-training ran in its own setup, on its own
    stream, as in its run alone. What is per seed stays with the seed's own algorithm (``members[s]``): its bank,
    MALA step size and acceptance counts (copied back after every step), iteration count and last negatives.

    Rounding: the latent gradient goes through batched products (the stacked flow's and energy's) where the run
    alone has single ones, and Metropolis-Hastings turns a last-bit difference into another state now and then.
    Measured (toy2d quick four_mode, seed 0 alone vs in a stack of 4): traces within 4e-6 relative after 100
    iterations, another run of the same distribution after 150 (final mode-weight MSE 0.0017 against 0.0029 alone;
    seeds 0-3 alone 0.0029, 0.117, 0.064, 0.012, stacked 0.0017, 0.27, 0.10, 0.029)."""

    non_finite = contrastive.NON_FINITE  # NT-EBM's own reason (nt_ebm.NTEBM.step)
    raw = True

    def __init__(self, members: list[NTEBM], generators: list[torch.Generator]):
        super().__init__(members, generators)
        self.flow = StackedRealNVP([m.flow for m in self.members]).requires_grad_(False)
        self.latent = StackedLatentEnergy(self.energy, self.flow)
        # the seeds' samplers as one: per-seed step sizes are set from the members each step
        self.sampler = MALA([], members[0].sampler.adaptation)
        self._neg: Tensor | None = None

    def step(self, x_pos: Tensor) -> tuple[list[dict[str, float]], list[bool]]:
        """One iteration of 001 Alg. 1 for every seed on its positives x_pos[s] ((S, batch, d)): the scalars its
        run alone logs and whether it is still finite (its run alone raises ``Diverged`` here), per seed. The
        iteration's work is added to each seed's own counter."""
        cfg, before, s = self.config, self.work.as_dict(), self.sampler
        draws = [m.bank.draw(min(x_pos.shape[1], len(m.bank)), g) for m, g in zip(self.members, self.generators,
                                                                                   strict=True)]
        s.step_size = [m.sampler.step_size for m in self.members]
        stats = [ChainStats() for _ in self.members]
        z = s.run(self.latent, torch.stack([z0 for _, z0 in draws]), cfg.n_steps, self.work, stats=stats,
                  generators=self.generators)
        for k, (m, (idx, _)) in enumerate(zip(self.members, draws, strict=True)):
            m.bank.put(idx, z[k])
            m.sampler.step_size, m.stats = s.step_size[k], stats[k]
            m._it += 1
        with torch.no_grad():
            x_neg = self.flow(z, self.work)[0]
        self._neg = x_neg
        loss, st = contrastive_step(self.energy, self.optimizer, x_pos, x_neg, cfg.energy_reg, self.work)
        self._add_work(before)
        ok = (torch.isfinite(loss) & torch.isfinite(x_neg).flatten(1).all(1)).tolist()
        names = list(st)
        cols = torch.stack([st[k] for k in names], 1).tolist()
        return [{**dict(zip(names, row, strict=True)), "local_accept": m.stats.rate, "step_size": m.sampler.step_size}
                for row, m in zip(cols, self.members, strict=True)], ok

    def _keep_rows(self, keep, idx):
        self.flow.keep_rows(idx)
        self.flow.requires_grad_(False)


class StackedCoopFlow(_LearnedFlowStack):
    """The S seeds of ``CoopFlow`` (004 Alg. 1) trained as one: each iteration draws every seed's flow samples from its
    own stream (``StackedRealNVP.sample`` with ``generators[s]``, step 4-5), revises them by the shared noise-free
    Langevin (``samplers.ula`` with a leading seed axis, step 6) on the stacked energy, then one Adam step over the
    stacked flow on the sum of the seeds' likelihoods of their revised samples (step 7, once the setting's warm-up is
    over) and one over the stacked energy (step 8, each seed's own gradient). Each seed's flow pre-training (setting
    "pre") ran in its own setup, on its own stream, as in its run alone. What is per seed stays with the seed's own
    algorithm (``members[s]``): its iteration count, last negatives and, once it is its own again (``member``), its
    flow. A seed whose revised samples' flow likelihood is not finite diverges with its run alone's reason
    (``why``), which tests that before the energy's step.

    Rounding. Through the warm-up (the flow frozen) the seeds' flow draws, revised samples and energies are those of
    their runs alone to the last bits (toy2d smoke, 3 seeds: bitwise on an AMD EPYC, within 1-4 float32 ulps on an
    Intel Xeon, whose batched products round otherwise); the stacked flow's parameter gradients (``StackedRealNVP``'s
    batched products and sums) round otherwise than a single flow's, so from the flow's first learning step its
    parameters differ by ~1e-8 relative, which the next draws and revisions carry into the energy. Adam and the
    wandering of CoopFlow's mode levels (algorithms/coopflow.py) amplify it. Measured (toy2d quick four_mode, seed 0
    alone vs in a stack of 4): traces within 1e-5 relative after 100 iterations, 1e-2 after 150, another run of the
    same distribution after 200 (final mode-weight MSE 0.275 against 0.097 alone; eight seeds alone 0.070-0.275)."""

    non_finite = contrastive.NON_FINITE

    def __init__(self, members: list[CoopFlow], generators: list[torch.Generator]):
        super().__init__(members, generators)
        first = self.members[0]
        self.n_steps, self.h, self._clamp = first.n_steps, first.h, first._clamp
        self._neg: Tensor | None = None
        self._why: list[str] = []

    def step(self, x_pos: Tensor) -> tuple[list[dict[str, float]], list[bool]]:
        """One iteration of 004 Alg. 1 for every seed on its positives x_pos[s] ((S, batch, d)): the scalars its run
        alone logs and whether it is still finite (its run alone raises ``Diverged`` here: ``why``), per seed. The
        iteration's work is added to each seed's own counter."""
        before, first = self.work.as_dict(), self.members[0]
        with torch.no_grad():
            x_hat = self.flow.sample(x_pos.shape[1], self.work, self.generators)[0]
        x_neg = ula(self.energy, x_hat, self.h, self.n_steps, self.work, noise=False, **self._clamp)
        self._neg = x_neg
        # every seed has done as many iterations, with the same warm-up
        ll = self._flow_step(x_neg) if first._it >= first.warmup else None
        loss, stats = contrastive_step(self.energy, self.optimizer, x_pos, x_neg, self.config.energy_reg, self.work)
        for m in self.members:
            m._it += 1
        self._add_work(before)
        with torch.no_grad():
            shift = (x_neg - x_hat).norm(dim=-1).mean(-1)
        flow_ok = torch.ones_like(loss, dtype=torch.bool) if ll is None else torch.isfinite(ll)
        ok = flow_ok & torch.isfinite(loss) & torch.isfinite(x_neg).flatten(1).all(1)
        self._why = [self.non_finite if f else FLOW_NON_FINITE for f in flow_ok.tolist()]
        names = list(stats) + (["flow_loglik_neg"] if ll is not None else []) + ["langevin_shift"]
        cols = torch.stack([stats[k] for k in stats] + ([ll] if ll is not None else []) + [shift], 1).tolist()
        return [dict(zip(names, row, strict=True)) for row in cols], ok.tolist()

    def why(self, i: int) -> str:
        return self._why[i]
