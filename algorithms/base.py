"""The algorithm contract.

An algorithm is one class in one file that reads like its paper's algorithm box: it is built from a
``Problem`` (target, training data, device, work counter), an energy and its ``Config`` (a dataclass of
hyper-parameters with the paper's names), and ``step(x_pos)`` performs one training iteration on a batch
of positive samples. It exposes its negative samples and how to run its own sampler from its own chain
states, which is what the metrics need.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor

from algorithms.energies import Energy
from algorithms.samplers import initial_states
from algorithms.work import Work


class ConfigError(ValueError):
    """A malformed configuration: the message names the key and the valid choices."""


class Diverged(RuntimeError):
    """Training produced a non-finite or exploding quantity; ``step`` is the iteration."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"diverged at step {step}: {reason}")
        self.step, self.reason = step, reason


@dataclass
class Problem:
    target: typing.Any  # datasets.base.Target
    data: Tensor  # the training set, on ``device``
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    work: Work = field(default_factory=Work)

    @property
    def box(self):
        return self.target.box


def bounds(lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False, doc: str = "") -> dict:
    """Field metadata giving a numeric field's valid range, checked by ``check_values`` (and so by
    ``build_config``): ``x: float = field(default=0.1, metadata=POSITIVE)``. ``doc`` says what 0 means, etc."""
    return {"bounds": (lo, lo_open, hi, hi_open, doc)}


POSITIVE = bounds(0, lo_open=True)
NONNEG = bounds(0)
AT_LEAST_1 = bounds(1)
UNIT = bounds(0, 1)  # [0, 1]


def _range_text(lo, lo_open, hi, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_values(obj, where: str = "") -> None:
    """The one value check of every config dataclass: numbers are finite (no nan / inf) and inside the range
    their field's ``bounds`` metadata gives. Raises ConfigError naming the parameter, its value and its range."""
    prefix = f"{where}: " if where else ""
    for f in dataclasses.fields(obj):
        val = getattr(obj, f.name)
        items = val.items() if isinstance(val, dict) else [(None, val)]
        for k, v in items:
            name = f.name if k is None else f"{f.name}[{k!r}]"
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if not math.isfinite(v):
                raise ConfigError(f"{prefix}parameter {name!r} must be finite, got {v!r}")
            if "bounds" not in f.metadata:
                continue
            lo, lo_open, hi, hi_open, doc = f.metadata["bounds"]
            bad = ((lo is not None and (v < lo or (lo_open and v == lo)))
                   or (hi is not None and (v > hi or (hi_open and v == hi))))
            if bad:
                raise ConfigError(f"{prefix}parameter {name!r} must be {_range_text(lo, lo_open, hi, hi_open)}"
                                  f"{f' ({doc})' if doc else ''}, got {v!r}")


def build_config(cls, values: dict, where: str):
    """Instantiate the dataclass ``cls`` from ``values``, checking names, types and value ranges (field
    ``bounds`` metadata, and whatever the class's ``__post_init__`` checks across fields)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for key, val in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown parameter {key!r}; valid: {', '.join(sorted(fields))}")
        out[key] = _coerce(val, hints[key], f"{where}: parameter {key!r}")
    try:
        obj = cls(**out)
    except (TypeError, ValueError) as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    check_values(obj, where)
    return obj


def _coerce(val, hint, where):
    origin = typing.get_origin(hint)
    if hint is float and isinstance(val, int | float) and not isinstance(val, bool):
        return float(val)
    if hint is int and isinstance(val, int) and not isinstance(val, bool):
        return val
    if hint is bool and isinstance(val, bool):
        return val
    if hint is str and isinstance(val, str):
        return val
    if origin is typing.Literal:
        if val in typing.get_args(hint):
            return val
        raise ConfigError(f"{where} must be one of {', '.join(map(str, typing.get_args(hint)))}, got {val!r}")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(hint)
        if val is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(val, a, where)
            except ConfigError:
                pass
    if origin is tuple and isinstance(val, list | tuple):
        return tuple(val)
    if origin is dict and isinstance(val, dict):
        _, vt = typing.get_args(hint)
        return {str(k): _coerce(v, vt, f"{where}[{k!r}]") for k, v in val.items()}
    raise ConfigError(f"{where} expects {getattr(hint, '__name__', hint)}, got {val!r}")


class TrainingAlgorithm(ABC):
    #: registry name, and the paper / algorithm box it implements
    name: str = ""
    paper: str = ""
    Config: type = object
    #: whether ``run_chains`` is a stochastic Markov chain. False for noise-free dynamics (gradient descent,
    #: an ODE): their chains collapse to fixed points, so R-hat / ESS say nothing about mixing and the
    #: evaluation reports ``max_rhat_deterministic`` instead (bench/evaluation.py)
    stochastic_chains: bool = True

    @classmethod
    def check_target(cls, config, target) -> None:
        """Raise ConfigError if ``config`` cannot run on ``target`` (e.g. it needs an exact density the target
        does not have). Called when a suite is resolved, before anything is trained. Most algorithms run
        on any target: nothing to check."""
        return None

    @classmethod
    def cost_changes(cls, config) -> str:
        """Why, with ``config``, a training iteration costs more (or less) later in training than at its start, in
        one phrase; "" where it does not. ``bench plan`` times a few early iterations and prints this beside the
        projection of such a cell. Most algorithms cost the same at every iteration: ""."""
        return ""

    @classmethod
    def stand_ins(cls, config, target) -> list[str]:
        """The networks of this algorithm other than the energy (e.g. a companion flow) that stand in for a paper's
        on ``target``: one line each, what they replace and how. A suite cell with any is never labelled "paper"
        (bench/suite.py). Most algorithms have no other network: none."""
        return []

    def __init__(self, problem: Problem, energy: Energy, config):
        self.problem = problem
        self.energy = energy
        self.config = config
        self.work = problem.work
        self.device = problem.device
        #: the random stream of this run's draws where it is not torch's global one: a seed trained together with
        #: other seeds (algorithms/stacking.py) draws from its own generator, in the state the global stream
        #: would have in its run alone. Used by the algorithms that stack; None: the global stream
        self.generator: torch.Generator | None = None

    def initial(self, kind: str, n: int) -> Tensor:
        """n chain states of the given kind (see samplers.initial_states) for this problem."""
        p = self.problem
        return initial_states(kind, n, box=p.box, data=p.data, device=p.device, dtype=p.data.dtype,
                              energy=self.energy, generator=self.generator)

    @abstractmethod
    def step(self, x_pos: Tensor) -> dict[str, float]:
        """One training iteration on the positive batch x_pos; returns scalars to log."""

    @abstractmethod
    def negatives(self) -> Tensor:
        """The negative samples of the last iteration."""

    @abstractmethod
    def chain_starts(self, n: int) -> Tensor:
        """Where this algorithm's sampler starts n chains now: the persistent state for persistent
        algorithms, its own initialisation otherwise (used for R-hat / ESS after training)."""

    @abstractmethod
    def run_chains(self, x0: Tensor, n_draws: int) -> Tensor:
        """Run this algorithm's own sampler from x0 for n_draws steps; returns (chain, draw, dim). An adaptive
        sampler runs with its adaptation frozen (``algorithms.mcmc.frozen``), so the chains are Markov and
        training's sampler state is left as it was. The caller drops its burn-in from the returned draws."""

    def extra_metrics(self, test_x: Tensor) -> dict[str, float]:
        """Metrics only this algorithm has (e.g. a companion flow's test log-likelihood, acceptance rates),
        computed after training on the target's held-out samples test_x; added to the results as they are."""
        return {}

    def extra_artifacts(self, box, n_grid: int) -> dict:
        """Arrays only this algorithm has, saved with the cell for the plots (e.g. a flow's samples and its
        log-density on the n_grid x n_grid evaluation grid over box); numpy arrays by name."""
        return {}

    def log_z_estimate(self) -> float | None:
        """The algorithm's own estimate of log Z_theta (e.g. Jarzynski, 003 eq. 12), if it makes one."""
        return None

    def negative_weights(self) -> Tensor | None:
        """Normalised importance weights of ``negatives()`` for weighted-walker algorithms, else None."""
        return None

    def draw_negatives(self, n: int) -> Tensor:
        """n negative samples drawn the way this algorithm draws them now, without changing its state."""
        return self.sample(self.chain_starts(n))

    def sample(self, x0: Tensor) -> Tensor:
        """The algorithm's negative-sampling procedure from chain starts x0."""
        raise NotImplementedError
