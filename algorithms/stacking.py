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
* its own outcome: a seed whose loss or chains turn non-finite leaves the stack (``StackedContrastive.drop``) and
  the others go on.

So seed s's numbers are those of its run alone up to floating-point rounding: a batched product may sum in
another order than the single one (tests/test_stacking.py states the tolerance). After training each seed is an
ordinary algorithm again (``StackedContrastive.member``) and is evaluated as a run of its own.

What stacks (``stackable``): the ULA-based maximum-likelihood baselines (ULA-EBM / PCD, CD, short-run:
``ContrastiveEBM`` whose step and sampler are the shared ones) on a plain MLP energy (``MLPEnergy``: Linear layers
and LeakyReLU / SiLU, no hooks), without PCD's image augmentation. The others train one seed per run.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from algorithms.contrastive import ContrastiveEBM, contrastive_step, make_optimizer
from algorithms.energies import MLPEnergy
from algorithms.samplers import ula
from algorithms.work import Work


class StackedMLP(nn.Module):
    """S ``MLPEnergy`` members of the same architecture as one module on stacked inputs: ``forward(x)`` with x
    (S, n, d) returns U (S, n), row s computed with member s's parameters. Its parameters are the members' stacked
    along a new first axis, named as the members name them (``named_members``)."""

    stacked = True

    def __init__(self, members: list[MLPEnergy]):
        super().__init__()
        layers = [m._plain_layers() if isinstance(m, MLPEnergy) else None for m in members]
        if any(lay is None for lay in layers):
            raise TypeError("only plain MLP energies stack (Linear layers and LeakyReLU / SiLU, no hooks)")
        first = members[0]
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

    def __len__(self) -> int:
        return self.params[0].shape[0]

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
        return u if self.temperature == 1.0 else u / self.temperature

    def value_and_grad(self, x: Tensor, work: Work) -> tuple[Tensor, Tensor]:
        """U(x) (S, n) and grad_x U(x) (S, n, d) by the chain rule written out, as ``MLPEnergy.value_and_grad``
        does per member, with batched products. The work is counted per seed (n points)."""
        *hidden, (w, b) = self._layers()
        with torch.no_grad():
            x = x.detach()
            pre, a = [], x
            for (wk, bk), (act, _) in zip(hidden, self.acts, strict=True):
                h = torch.baddbmm(bk.unsqueeze(1), a, wk.transpose(1, 2))
                pre.append(h)
                a = act(h)
            u = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2)).squeeze(-1)
            g = w.expand(-1, x.shape[1], -1)
            for (wk, _), h, (_, back) in zip(reversed(hidden), reversed(pre), reversed(self.acts), strict=True):
                g = torch.bmm(back(g, h), wk)
            if self.temperature != 1.0:
                u, g = u / self.temperature, g / self.temperature
        work.energy_evals += x.shape[1]
        work.grad_evals += x.shape[1]
        return u, g

    def grad(self, x: Tensor, work: Work) -> Tensor:
        return self.value_and_grad(x, work)[1]

    def write_member(self, i: int, energy: MLPEnergy) -> MLPEnergy:
        """Copy the parameters of stack row ``i`` into ``energy`` (a member of the same architecture)."""
        named = dict(energy.named_parameters())
        with torch.no_grad():
            for name, p in self.named_members():
                named[name].copy_(p[i])
        return energy


def stacks(cls) -> bool:
    """Whether the algorithm class ``cls`` trains stacked (on a plain MLP energy): a ULA-based maximum-likelihood
    baseline with the shared step and sampler, whose chain starts are written to draw from the seed's own stream:
    the class that defines its ``start_chains`` says so with ``stacks = True`` (a subclass that draws its chain
    starts otherwise does not stack by accident)."""
    owner = next((c for c in getattr(cls, "__mro__", ()) if "start_chains" in c.__dict__), None)
    return (isinstance(cls, type) and issubclass(cls, ContrastiveEBM) and cls.step is ContrastiveEBM.step
            and cls.sample is ContrastiveEBM.sample and owner is not None and owner.__dict__.get("stacks", False))


def stackable(alg) -> bool:
    """Whether ``alg`` (an algorithm built for one seed) trains stacked: its class ``stacks``, its energy is a plain
    MLP (``MLPEnergy``: Linear layers and LeakyReLU / SiLU, no hooks) and it does not augment images."""
    return (stacks(type(alg)) and isinstance(alg.energy, MLPEnergy) and alg.energy._plain_layers() is not None
            and getattr(alg.config, "augment", "none") == "none")


class StackedContrastive:
    """The S seeds of a ``ContrastiveEBM`` (ULA-EBM / PCD, CD, short-run) trained as one: their negatives by ULA on
    the stacked energy from stacked chain starts, one optimiser over the stacked parameters (000 Alg. 3 / 003 Alg.
    3-4 for each seed). ``members`` are the seeds' own algorithms, built as in their runs alone; each keeps its own
    chain state (bank, walkers: its ``start_chains`` and ``keep`` run per seed, drawing from the seed's
    ``generator``), and ``member(i)`` makes it the whole algorithm of its seed again for the evaluation."""

    def __init__(self, members: list[ContrastiveEBM], generators: list[torch.Generator]):
        if not all(stackable(m) for m in members) or len({type(m) for m in members}) != 1 \
                or any(dataclasses.asdict(m.config) != dataclasses.asdict(members[0].config) for m in members):
            raise TypeError("these algorithms do not stack (different classes or settings, or not stackable)")
        self.members, self.config = list(members), members[0].config
        self.generators = list(generators)
        if len(self.generators) != len(self.members):
            raise ValueError("one generator per seed")
        self.energy = StackedMLP([m.energy for m in self.members])
        self.optimizer = make_optimizer(None, self.config, named=self.energy.named_members())
        self.work = Work()  # one seed's work (every seed in the stack does the same)
        self._neg: Tensor | None = None

    def __len__(self) -> int:
        return len(self.members)

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
        for m in self.members:
            for k, v in self.work.as_dict().items():
                setattr(m.work, k, getattr(m.work, k) + v - before[k])
        names = list(stats)
        cols = torch.stack([stats[k] for k in names], 1).tolist()
        return [dict(zip(names, row, strict=True)) for row in cols], ok

    def member(self, i: int) -> ContrastiveEBM:
        """Seed ``i`` of the stack as its own algorithm, in the state its run alone would have now: its energy's
        parameters, last negatives and (already its own) chain state. Its optimiser is not kept up to date: the
        evaluation never steps it."""
        m = self.members[i]
        self.energy.write_member(i, m.energy)
        if self._neg is not None:
            m._neg = self._neg[i]
        return m

    def drop(self, keep: list[int]) -> None:
        """Keep only the seeds at stack rows ``keep`` (in order): their parameters, Adam moments and members."""
        old, old_params = self.optimizer, list(self.energy.params)
        idx = torch.tensor(keep, device=old_params[0].device)
        self.members = [self.members[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]
        with torch.no_grad():
            for k, p in enumerate(old_params):
                self.energy.params[k] = nn.Parameter(p.detach()[idx].clone())
        self.optimizer = make_optimizer(None, self.config, named=self.energy.named_members())
        for p_old, p_new, g_old, g_new in zip(old_params, self.energy.params, old.param_groups,
                                              self.optimizer.param_groups, strict=True):
            g_new["lr"] = g_old["lr"]
            state = old.state.get(p_old)
            if state:
                self.optimizer.state[p_new] = {
                    k: v[idx].clone() if torch.is_tensor(v) and v.dim() > 0 else v.clone() if torch.is_tensor(v)
                    else v for k, v in state.items()}
        if self._neg is not None:
            self._neg = self._neg[idx]
