"""Calibrated samplers shared by the flow-assisted algorithms: adaptive MALA, adaptive HMC, i-SIR and flowMC.

All target pi = exp(-U) / Z and use the suite's step-size convention (algorithms/samplers.py): MALA's
proposal is

    y = x - h grad U(x) + sqrt(2 h) xi,   log q(y | x) = -|y - x + h grad U(x)|^2 / (4 h)    (000 Alg. 4)

ULA stays in samplers.py. Each sampler reports its acceptance rates and counts its work through the
Energy / flow calls it makes (``Work.grad_evals``, ``energy_evals``, ``flow_passes``, all per sample).

Step-size adaptation (000 App. C.1 / flowMC; 001 A.4, after Andrieu & Thoms 2008): after every step the
mean acceptance over the chains is compared with the target; outside ``target +- tol`` the step is
multiplied (too many acceptances) or divided (too few) by ``factor``. One step size is shared by all chains.
An adapted chain is not exactly Markov: the invariance tests run with ``adapt=False``, and chains run after
training (R-hat / ESS, negatives for the metrics) run inside ``frozen(sampler)``, which switches adaptation off
and restores the sampler's training state (step sizes, acceptance counts) afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from algorithms.energies import Energy
from algorithms.work import Work


@dataclass
class Adaptation:
    """Multiplicative step-size control toward a target acceptance rate."""

    target: float
    factor: float = 1.03
    tol: float = 0.02
    enabled: bool = True
    min_step: float = 1e-8
    max_step: float = 10.0

    def __post_init__(self):
        if not 0 < self.target < 1:
            raise ValueError(f"target acceptance must be in (0, 1), got {self.target}")
        if self.factor <= 1:
            raise ValueError(f"adaptation factor must be > 1, got {self.factor}")

    def update(self, step: float, accept_rate: float) -> float:
        if not self.enabled:
            return step
        if accept_rate > self.target + self.tol:
            step *= self.factor
        elif accept_rate < self.target - self.tol:
            step /= self.factor
        return min(max(step, self.min_step), self.max_step)


@dataclass
class ChainStats:
    """Acceptance counts accumulated over a run (means over chains and steps)."""

    accepted: float = 0.0
    proposed: int = 0

    def add(self, acc: Tensor) -> None:
        self.accepted += float(acc.float().sum())
        self.proposed += acc.numel()

    @property
    def rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else float("nan")


def _stack(chain: list[Tensor], x: Tensor, lead: int = 1) -> Tensor:
    """The states after each step as one tensor (..., n, n_steps, ...): the step axis after the ``lead`` axes
    (the chains; a stacked run's seed axis and chains)."""
    return torch.stack(chain, lead) if chain else x.unsqueeze(lead).narrow(lead, 0, 0)


def _mh_accept(log_ratio: Tensor, generators=None) -> Tensor:
    """Accept with probability min(1, exp(log_ratio)); a non-finite ratio (nan / -inf) is a rejection.
    ``generators`` (seeds trained together): row s's uniforms from ``generators[s]``."""
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    if generators is None:
        uniform = torch.rand_like(log_ratio)
    else:
        uniform = torch.empty_like(log_ratio)
        for s, g in enumerate(generators):
            uniform[s].uniform_(generator=g)
    return uniform.log() < log_ratio


# --- seeds trained together (algorithms/stacking.py) -------------------------------------------------------------
# A sampler runs S seeds' chains at once on a stacked energy: states (S, n, d), energies and acceptances (S, n),
# ``generators[s]`` the random stream of seed s (its draws are those of its run alone), and what adapts is per seed:
# a MALA's ``step_size`` is then the list of the seeds' step sizes and ``stats`` the list of their ChainStats.

def _per_seed(values: list, like: Tensor) -> Tensor:
    """Per-seed scalars (a list, one entry per seed) as a tensor of ``like``'s dtype and device: the floats a
    single run passes as an ``alpha`` are rounded to that dtype too."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _axpy(a: Tensor, b: Tensor, c, out: Tensor | None = None) -> Tensor:
    """a + c b, c a float or per-seed scalars shaped to broadcast (``addcmul``: the same rounding as ``alpha``)."""
    return torch.addcmul(a, b, c, out=out) if torch.is_tensor(c) else torch.add(a, b, alpha=c, out=out)


def _axpy_(a: Tensor, b: Tensor, c) -> Tensor:
    """a += c b in place (``_axpy``)."""
    return a.addcmul_(b, c) if torch.is_tensor(c) else a.add_(b, alpha=c)


def _count(stats, acc: Tensor) -> None:
    """Add acceptances to ``stats``: one ChainStats, or per seed a list of them (acc (S, n))."""
    if isinstance(stats, ChainStats):
        stats.add(acc)
        return
    for st, k in zip(stats, acc.float().sum(-1).tolist(), strict=True):  # sums of 0/1: exact in any order
        st.accepted += k
        st.proposed += acc.shape[-1]


def _categorical(log_w: Tensor, generators=None) -> Tensor:
    """An index per row drawn from the self-normalised weights exp(log_w) along the last axis; ``generators``: row
    block s (a stacked run's seed) from ``generators[s]`` (the draw ``Categorical.sample`` makes on that stream)."""
    cat = torch.distributions.Categorical(logits=log_w)
    if generators is None:
        return cat.sample()
    return torch.stack([torch.multinomial(p, 1, True, generator=g)[:, 0]
                        for p, g in zip(cat.probs, generators, strict=True)])


@dataclass
class MALA:
    """Metropolis-adjusted Langevin (000 Alg. 4) with step h: x' = x - h grad U + sqrt(2h) xi, then MH.

    One gradient evaluation per chain and step, plus one at the start of each ``run`` (the gradient at the
    starting states is not carried between runs, because the energy changes between training iterations)."""

    step_size: float = 0.01
    adaptation: Adaptation = field(default_factory=lambda: Adaptation(0.75))
    #: (n, d) buffers of the last run that it did not return, reused by the next run of the same shape
    _spare: list = field(default_factory=list, init=False, repr=False, compare=False)

    def run(self, energy: Energy, x: Tensor, n_steps: int, work: Work, keep_chain: bool = False,
            stats: ChainStats | None = None, generators=None) -> Tensor:
        """n_steps MALA steps from x; returns the end states, or with ``keep_chain`` the (n, n_steps, d)
        states after each step. Acceptances are added to ``stats``; ``step_size`` adapts in place.

        Seeds trained together (``generators``, one random stream per seed): a stacked energy, x (S, n, d),
        ``step_size`` the list of the seeds' step sizes (each adapts to its own seed's acceptances) and ``stats``
        a list of ChainStats; a kept chain comes back as (S, n, n_steps, d).

        Beyond the gradient and the draw a step makes a few passes over the (n, d) states and allocates no
        (n, d) tensor (but the proposal, with ``keep_chain``): the noise, the proposal (which becomes the new
        state in place) and the gradient live in buffers, and the proposal-density ratio is computed in the
        gradient's next buffer (``_log_q_ratio``). At 64k chains fresh (n, d) tensors (page faults) cost more
        than the arithmetic, so the buffers the run does not return are kept for the next run of the same shape
        (``_spare``): a run allocates one (n, d) buffer, the states it returns (003's student in d = 50, float64,
        64k chains, runs of 4 steps, one thread: 111-118 -> 92-94 ms of CPU per step)."""
        x = x.detach()
        chain, lead = [], 1 if generators is None else 2
        if n_steps > 0:
            u, g = energy.value_and_grad(x, work)
            # without keep_chain the states live in two buffers too (a kept chain needs a new tensor per step);
            # from a strided view they do not, so that the noise is drawn in the same memory order as before
            dtype = torch.promote_types(x.dtype, g.dtype)  # x - h g: a float64 energy makes float64 states
            spare, self._spare = self._spare, []
            g_bufs = (_take(spare, g, g.shape), _take(spare, g, g.shape))  # contiguous: _log_q_ratio views one (n, d)
            y_bufs = None if keep_chain or not x.is_contiguous() else \
                (_take(spare, x, x.shape, dtype), _take(spare, x, x.shape, dtype))
            xi = _take(spare, x)
            ones = g.new_ones(g.shape[lead:].numel())
        for _ in range(n_steps):
            h = self.step_size
            # -h, sqrt(2h) and the ratio's -sqrt(h/8), sqrt(h/2): floats, or per seed (S, 1, 1) tensors
            c = [-h, math.sqrt(2 * h), -math.sqrt(h / 8), math.sqrt(h / 2)] if generators is None else \
                _per_seed([[-v, math.sqrt(2 * v), -math.sqrt(v / 8), math.sqrt(v / 2)] for v in h], g)[
                    :, :, None, None].unbind(1)
            if xi.dtype != x.dtype or xi.stride() != x.stride():
                xi = _take(spare, x)
            if generators is None:
                xi.normal_()  # = torch.randn_like(x): the same draws
            else:
                for s, gen in enumerate(generators):
                    xi[s].normal_(generator=gen)
            out = None if y_bufs is None else y_bufs[0] if x is not y_bufs[0] else y_bufs[1]
            y = _axpy_(_axpy(x, g, c[0], out=out), xi, c[1])
            uy, gy = energy.value_and_grad(y, work)
            g_next = g_bufs[0] if g is not g_bufs[0] else g_bufs[1]  # scratch for the ratio, then the new g
            acc = _mh_accept(u - uy + _log_q_ratio(g, gy, xi, c[2:], g_next, ones, u.shape), generators)
            a = acc.view(*acc.shape, *([1] * (x.dim() - acc.dim())))
            # y and gy may share memory (an energy may return its input as gradient: U = |x|^2 / 2); writing y
            # changes only rejected rows, where gy is not read, so the gradient goes to a buffer of its own
            g = torch.where(a, gy, g, out=g_next)
            x = torch.where(a, y, x, out=y)
            u = torch.where(acc, uy, u)
            self.step_size = _record(acc, self.adaptation, h, stats, chain if keep_chain else None, x)
        if n_steps > 0:
            self._spare = [*g_bufs, xi, *(b for b in y_bufs or () if b is not x)]  # not the states returned
        return _stack(chain, x, lead) if keep_chain else x


def _take(spare: list[Tensor], like: Tensor, shape=None, dtype=None) -> Tensor:
    """A buffer from ``spare`` (removed from it) or a new one: shaped like ``torch.empty_like(like)``, or contiguous
    with ``shape`` / ``dtype`` where given. Its contents are garbage: the caller writes before it reads."""
    if shape is None and not like.is_contiguous():
        return torch.empty_like(like)  # empty_like's strides (the noise is drawn in the input's memory order)
    shape, dtype = like.shape if shape is None else shape, like.dtype if dtype is None else dtype
    for i, t in enumerate(spare):
        if t.shape == shape and t.dtype == dtype and t.device == like.device and t.is_contiguous():
            return spare.pop(i)
    return torch.empty(shape, dtype=dtype, device=like.device)


def _log_q_ratio(g: Tensor, gy: Tensor, xi: Tensor, c, scratch: Tensor, ones: Tensor, shape) -> Tensor:
    """log q(x | y) - log q(y | x) of the MALA proposal y = x - h g + sqrt(2h) xi (g, gy: grad U at x, y) for
    chains whose energies have ``shape`` ((n,); stacked (S, n)); c = (-sqrt(h/8), sqrt(h/2)), floats or per seed
    (S, 1, 1) tensors.

    With v = g + gy, x - y + h gy = h v - sqrt(2h) xi, so -|x - y + h gy|^2 / (4h) + |xi|^2 / 2 is exactly
    sqrt(h/2) v . (xi - sqrt(h/8) v): the same ratio as the two densities written out (up to rounding), in
    three passes over (n, d) instead of seven. Overwrites ``xi`` and ``scratch``; the row sums are a
    matrix-vector product with ``ones`` (a reduction over a short last axis is slow on CPU)."""
    v = torch.add(g, gy, out=scratch)
    _axpy_(xi, v, c[0])
    r = torch.mv(v.mul_(xi).view(math.prod(shape), -1), ones).view(shape)
    return r.mul_(c[1].view(-1, 1) if torch.is_tensor(c[1]) else c[1])


def _keep_accepted(acc: Tensor, current, proposed):
    """Metropolis-Hastings bookkeeping: per chain, the proposed (state, energy, gradient) where accepted."""
    return tuple(torch.where(acc.view(-1, *([1] * (c.dim() - 1))), p, c)
                 for c, p in zip(current, proposed, strict=True))


def _record(acc: Tensor, adaptation, step, stats, chain: list | None, x: Tensor):
    """Count acceptances, keep the state if a chain is recorded, and return the adapted step size (per seed: a
    list of step sizes, each adapted to its own seed's acceptances, acc (S, n))."""
    if stats is not None:
        _count(stats, acc)
    if chain is not None:
        chain.append(x)
    if isinstance(step, list):
        return [adaptation.update(h, r) for h, r in zip(step, acc.float().mean(-1).tolist(), strict=True)]
    return adaptation.update(step, float(acc.float().mean()))


@dataclass
class HMC:
    """Hamiltonian Monte Carlo (Neal 2011) as 001 A.4 uses it: unit mass, ``n_leapfrog`` leapfrog steps of
    size ``step_size`` (the leapfrog epsilon, not the suite's h; with one leapfrog step HMC is MALA with
    h = epsilon^2 / 2), adapted toward acceptance 0.651 (Beskos et al. 2013). ``n_leapfrog`` gradient
    evaluations per chain and step, plus one at the start of each run."""

    step_size: float = 0.15
    n_leapfrog: int = 3
    adaptation: Adaptation = field(default_factory=lambda: Adaptation(0.651))

    def __post_init__(self):
        if self.n_leapfrog < 1:
            raise ValueError(f"HMC needs at least one leapfrog step, got {self.n_leapfrog}")

    def run(self, energy: Energy, x: Tensor, n_steps: int, work: Work, keep_chain: bool = False,
            stats: ChainStats | None = None) -> Tensor:
        x = x.detach()
        chain = []
        if n_steps > 0:
            u, g = energy.value_and_grad(x, work)
        for _ in range(n_steps):
            eps = self.step_size
            p0 = torch.randn_like(x)
            y, p, gy = x, p0 - 0.5 * eps * g, g
            for i in range(self.n_leapfrog):
                y = y + eps * p
                uy, gy = energy.value_and_grad(y, work)
                p = p - (eps if i < self.n_leapfrog - 1 else 0.5 * eps) * gy
            log_ratio = (u + 0.5 * (p0**2).sum(-1)) - (uy + 0.5 * (p**2).sum(-1))
            acc = _mh_accept(log_ratio)
            x, u, g = _keep_accepted(acc, (x, u, g), (y, uy, gy))
            self.step_size = _record(acc, self.adaptation, eps, stats, chain if keep_chain else None, x)
        return _stack(chain, x) if keep_chain else x


@dataclass
class ISIR:
    """Iterated sampling importance resampling (000 Alg. 6; Rubin 1987; Samsonov et al. 2022) with a flow
    proposal lambda: per chain, the current state takes slot 1 of a pool of ``n_particles``, the other
    N - 1 slots are fresh flow samples; one index is drawn from the self-normalised weights
    w_j prop. to pi(y_j) / lambda(y_j), i.e. log w_j = -U(y_j) - log lambda(y_j). "Accepted" = an index
    other than the current state's was drawn. It leaves pi invariant for any proposal whose support covers
    pi's.

    Work per chain and step: N - 1 flow samples and one density evaluation of the current state (N flow
    passes) and N energy evaluations (no gradient)."""

    n_particles: int = 32

    def __post_init__(self):
        if self.n_particles < 2:
            raise ValueError(f"i-SIR needs at least 2 particles, got {self.n_particles}")

    @torch.no_grad()
    def step(self, energy: Energy, flow, x: Tensor, work: Work, stats: ChainStats | None = None,
             generators=None) -> Tensor:
        """One i-SIR step of the chains x (n, d). Seeds trained together (``generators``): a stacked energy and
        flow, x (S, n, d), seed s's flow samples and index draws from ``generators[s]``, ``stats`` per seed."""
        *lead, n, d = x.shape
        m = self.n_particles - 1
        y, log_q_y = flow.sample(n * m, work) if generators is None else flow.sample(n * m, work, generators)
        log_q_x = flow.log_prob(x, work)
        pool = torch.cat([x.unsqueeze(-2), y.reshape(*lead, n, m, d)], -2)  # (n, N, d); slot 0 = current state
        log_q = torch.cat([log_q_x.unsqueeze(-1), log_q_y.reshape(*lead, n, m)], -1)
        u = energy.value(pool.reshape(*lead, n * (m + 1), d), work).reshape(*lead, n, m + 1)
        # a particle of non-finite energy (+inf or NaN) has weight 0 (log w = -inf, not nan_to_num's default of the
        # lowest finite float for -inf), and a chain whose whole pool has zero weight keeps its state
        log_w = torch.nan_to_num(-u - log_q, nan=-math.inf, posinf=-math.inf, neginf=-math.inf)
        dead = ~torch.isfinite(log_w).any(-1)
        log_w[dead, 0] = 0.0
        idx = _categorical(log_w, generators)
        if stats is not None:
            _count(stats, idx != 0)
        return torch.take_along_dim(pool, idx[..., None, None], -2).squeeze(-2)


@dataclass
class FlowMC:
    """flowMC (000 Alg. 5, Gabrie et al. 2022) with i-SIR (Alg. 6) as its global step, as 000 App. C.1
    uses it: repeated blocks of ``n_global`` i-SIR steps followed by ``n_local`` MALA steps, ``n_steps`` steps
    in all (a global and a local step both count as one step). The flow's own training (Alg. 5 step 3) is
    not done here: the training algorithm trains it (000 Alg. 1 step 5)."""

    mala: MALA
    isir: ISIR
    n_global: int = 1
    n_local: int = 4
    local: ChainStats = field(default_factory=ChainStats)
    glob: ChainStats = field(default_factory=ChainStats)

    def __post_init__(self):
        if self.n_global < 0 or self.n_local < 0 or self.n_global + self.n_local == 0:
            raise ValueError("flowMC needs n_global + n_local >= 1 (both non-negative)")

    def schedule(self, n_steps: int) -> list[tuple[str, int]]:
        """The run as segments ('global' | 'local', length)."""
        out, k = [], 0
        while k < n_steps:
            for kind, length in (("global", self.n_global), ("local", self.n_local)):
                length = min(length, n_steps - k)
                if length > 0:
                    out.append((kind, length))
                    k += length
        return out

    def run(self, energy: Energy, flow, x: Tensor, n_steps: int, work: Work, keep_chain: bool = False,
            generators=None) -> Tensor:
        """n_steps flowMC steps from x; end states, or the (n, n_steps, d) states after each step.
        Acceptances accumulate in ``self.local`` / ``self.glob`` (reset them to start a new count).

        Seeds trained together (``generators``, one random stream per seed): a stacked energy and flow, x
        (S, n, d), chains (S, n, n_steps, d), and per seed ``mala.step_size`` and ``local`` / ``glob`` lists."""
        x = x.detach()
        chain, lead = [], x.dim() - 1
        for kind, length in self.schedule(n_steps):
            if kind == "global":
                for _ in range(length):
                    x = self.isir.step(energy, flow, x, work, self.glob, generators)
                    if keep_chain:
                        chain.append(x.unsqueeze(lead))
            else:
                out = self.mala.run(energy, x, length, work, keep_chain=keep_chain, stats=self.local,
                                    generators=generators)
                if keep_chain:
                    chain.append(out)
                    x = out.select(lead, -1)
                else:
                    x = out
        if keep_chain:
            return torch.cat(chain, lead) if chain else _stack([], x, lead)
        return x

    def reset_stats(self) -> None:
        self.local, self.glob = ChainStats(), ChainStats()


def _adaptive_parts(sampler) -> list:
    """The step-size-adapting pieces of a sampler: itself (MALA, HMC) or its local sampler (flowMC)."""
    if isinstance(sampler, FlowMC):
        return [sampler.mala]
    return [sampler] if isinstance(getattr(sampler, "adaptation", None), Adaptation) else []


@contextmanager
def frozen(sampler) -> Iterator:
    """Run ``sampler`` (MALA, HMC or FlowMC) as a fixed Markov kernel: inside the block its step size does not
    adapt; on leaving it (normally or by an exception) the training state is restored exactly: step sizes,
    adaptation switches and flowMC's acceptance counts (which start from zero inside the block). Evaluation
    chains therefore never change training. Samplers without adaptation (ULA, i-SIR) pass through unchanged.

        with frozen(self.sampler) as s:
            chain = s.run(energy, x0, n_draws, work, keep_chain=True)
    """
    parts = _adaptive_parts(sampler)
    saved = [(p.step_size, p.adaptation.enabled) for p in parts]
    stats = (sampler.local, sampler.glob) if isinstance(sampler, FlowMC) else None
    try:
        for p in parts:
            p.adaptation.enabled = False
        if stats is not None:
            sampler.reset_stats()
        yield sampler
    finally:
        for p, (step, enabled) in zip(parts, saved, strict=True):
            p.step_size, p.adaptation.enabled = step, enabled
        if stats is not None:
            sampler.local, sampler.glob = stats
