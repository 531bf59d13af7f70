"""Suites are data: a TOML file per suite under bench/suites/ lists targets, algorithms and, per
fidelity, the settings of every cell.

Settings of a cell (algorithm a, target t) at fidelity f are merged in this order, later wins:
``[f.defaults]``, ``[f.algorithms.a]``, ``[f.targets.t]``, ``[f.cells."a/t"]``. Keys that belong to
``TrainConfig`` drive the training loop and evaluation; every other key must be a parameter of the
algorithm's ``Config``. Everything is validated before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import algorithms
import datasets
from algorithms.base import ConfigError, build_config
from bench.errors import BenchError

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass
class TrainConfig:
    """Training loop and evaluation settings shared by every algorithm."""

    energy: str = "toy_mlp"
    dtype: Literal["float32", "float64"] = "float32"
    n_data: int = 60_000
    batch_size: int = 256
    #: training length: ``n_iters``, or ``epochs`` over n_data (n_iters = ceil(epochs * n_data / batch))
    n_iters: int = 0
    epochs: float = 0.0
    #: iterations between trace points (mode weights over training); 0: only at the end
    eval_every: int = 0
    #: evaluation grid resolution per axis, and the coarser grid used for traces
    eval_grid: int = 200
    trace_grid: int = 100
    #: held-out target samples for the log-density error
    n_eval_samples: int = 10_000
    #: independent chains and draws for R-hat / ESS after training (000 Table 2: 128 chains)
    n_chains: int = 128
    n_draws: int = 500
    #: draws run and discarded before those n_draws (ours: a fifth of the default n_draws; 001 §4 discards
    #: 400 of 2,000 steps); the sampler's step-size adaptation is frozen for the whole evaluation chain
    burn_in: int = 100
    #: negative samples used to estimate their mode weights after training
    n_negatives: int = 8192
    #: exact model samples for the model's mode weights where no grid is used (energies with sample_exact)
    n_model_samples: int = 100_000
    #: stop after this many energy-gradient evaluations (0: no budget), to compare algorithms at equal work
    grad_budget: int = 0
    #: record the cell as "timeout" past this many seconds of training (0: no limit)
    time_limit_s: float = 0.0
    #: R-hat / ESS of fresh evaluation chains (n_chains x n_draws) at every k-th trace point and the last one
    #: (000 Fig. 6); 0: only after training
    rhat_every: int = 0
    #: the independent audit of the EBM's mode weights after training (bench/audit.py): chains (0: off), kept
    #: draws and burn-in steps of its flowMC with a mixture proposal; mixture targets only
    audit_chains: int = 0
    audit_draws: int = 400
    audit_burn_in: int = 100

    def __post_init__(self):
        if self.burn_in < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in}")

    def iterations(self) -> int:
        if self.n_iters > 0:
            return self.n_iters
        if self.epochs > 0:
            return math.ceil(self.epochs * self.n_data / self.batch_size)
        raise ConfigError("set n_iters or epochs")


TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass
class Cell:
    suite: str
    target: str
    algorithm: str
    fidelity: str
    seed: int
    train: TrainConfig
    algo: object  # the algorithm's Config dataclass
    base: str = ""  # the registered algorithm behind a variant name (= algorithm when not a variant)
    code_version: str = ""

    def __post_init__(self):
        self.base = self.base or self.algorithm

    def cell_id(self) -> str:
        """Hash of everything that determines the result: the cell, its full config, the target's version
        and the code version. A finished cell with the same id is not computed again."""
        target_version = datasets.get_target(self.target).version
        blob = json.dumps([self.key(), self.base, target_version, self.config(), self.code_version],
                          sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def key(self) -> dict:
        return {"suite": self.suite, "target": self.target, "algorithm": self.algorithm,
                "fidelity": self.fidelity, "seed": self.seed}

    def config(self) -> dict:
        return {**dataclasses.asdict(self.train), **dataclasses.asdict(self.algo)}


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name: str) -> dict:
    path = SUITES_DIR / f"{name}.toml"
    if not path.exists():
        raise BenchError(f"unknown suite {name!r}; valid: {', '.join(available_suites())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{path}: malformed suite file ({e})") from None
    for key in ("targets", "algorithms", "fidelity"):
        if key not in data:
            raise BenchError(f"{path}: missing '{key}'")
    data["name"] = name
    data["path"] = str(path)
    return data


def _check_names(kind: str, names, valid) -> None:
    bad = [n for n in names if n not in valid]
    if bad:
        raise BenchError(f"unknown {kind} {bad[0]!r}; valid: {', '.join(sorted(valid))}")


def _variants(suite: dict) -> dict[str, tuple[str, dict]]:
    """Named variants of an algorithm with fixed parameters (benchopt's ``solver[param=value]``):
    ``[variants.NAME]`` with ``algorithm = BASE`` and the parameters that define the variant."""
    out = {}
    for name, spec in suite.get("variants", {}).items():
        spec = dict(spec)
        base = spec.pop("algorithm", None)
        if base not in algorithms.ALGORITHMS:
            raise BenchError(f"{suite['path']} [variants.{name}]: 'algorithm' must be one of "
                             f"{', '.join(sorted(algorithms.ALGORITHMS))}, got {base!r}")
        out[name] = (base, spec)
    return out


def resolve_cells(suite: dict, fidelity: str, algorithm_names=None, target_names=None, seeds=None) -> list[Cell]:
    """All cells of a suite at a fidelity, validated. Raises BenchError with a one-line message."""
    fids = suite["fidelity"]
    if fidelity not in fids:
        raise BenchError(f"unknown fidelity {fidelity!r} for suite {suite['name']}; valid: {', '.join(fids)}")
    variants = _variants(suite)
    base_of = {**{a: (a, {}) for a in algorithms.ALGORITHMS}, **variants}
    _check_names("target", suite["targets"], datasets.TARGETS)
    _check_names("algorithm", suite["algorithms"], base_of)
    fid = fids[fidelity]
    # a fidelity may run a subset of the suite's algorithms unless others are named on the command line
    algos = list(algorithm_names or fid.get("default_algorithms") or suite["algorithms"])
    _check_names("algorithm", fid.get("default_algorithms", []), base_of)
    targets = list(target_names or suite["targets"])
    _check_names("algorithm", algos, base_of)
    _check_names("target", targets, datasets.TARGETS)
    n_seeds = int(seeds if seeds is not None else fid.get("seeds", 1))
    if n_seeds < 1:
        raise BenchError(f"--seeds must be at least 1, got {n_seeds}")
    known_sections = {"seeds", "defaults", "algorithms", "targets", "cells", "description", "default_algorithms"}
    for sec in fid:
        if sec not in known_sections:
            raise BenchError(f"{suite['path']}: [fidelity.{fidelity}] has unknown section {sec!r}; "
                             f"valid: {', '.join(sorted(known_sections))}")

    def params(a):
        return TRAIN_KEYS | {f.name for f in dataclasses.fields(algorithms.ALGORITHMS[base_of[a][0]].Config)}

    # Shared sections ([defaults], [targets.t]) apply each key to the algorithms that have it; a key that
    # no algorithm of the suite has is a typo. [algorithms.a] and [cells."a/t"] are checked strictly.
    every = set().union(*(params(a) for a in suite["algorithms"]))
    shared = [("defaults", fid.get("defaults", {}))] + [
        (f"targets.{t}", v) for t, v in fid.get("targets", {}).items()]
    for sec, values in shared:
        for k in values:
            if k not in every:
                raise BenchError(f"{suite['path']} [fidelity.{fidelity}.{sec}]: unknown parameter {k!r}; "
                                 f"valid: {', '.join(sorted(every))}")
    cells = []
    sec = fid.get("algorithms", {})
    for a in algos:
        own = params(a)
        base, fixed = base_of[a]
        for t in targets:
            # defaults < [algorithms.base] < [algorithms.variant] < [targets.t] < cells base/t < cells
            # variant/t < the variant's defining parameters
            values = {**{k: v for k, v in fid.get("defaults", {}).items() if k in own},
                      **sec.get(base, {}), **(sec.get(a, {}) if a != base else {}),
                      **{k: v for k, v in fid.get("targets", {}).get(t, {}).items() if k in own},
                      **fid.get("cells", {}).get(f"{base}/{t}", {}),
                      **(fid.get("cells", {}).get(f"{a}/{t}", {}) if a != base else {}),
                      **fixed}
            where = f"{suite['path']} [fidelity.{fidelity}] {a}/{t}"
            train_values = {k: v for k, v in values.items() if k in TRAIN_KEYS}
            algo_values = {k: v for k, v in values.items() if k not in TRAIN_KEYS}
            cls = algorithms.ALGORITHMS[base]
            try:
                train = build_config(TrainConfig, train_values, where)
                train.iterations()
                if train.audit_chains and not isinstance(datasets.get_target(t), datasets.GaussianMixture):
                    raise ConfigError(f"audit_chains needs a Gaussian-mixture target (the audit's proposal sits "
                                      f"at its means); {t!r} is not one")
                algo = build_config(cls.Config, algo_values, where)
                cls.check_target(algo, datasets.get_target(t))
            except ConfigError as e:
                msg = str(e)
                if "unknown parameter" in msg:
                    msg = msg.split("; valid:")[0] + "; valid: " + ", ".join(sorted(own))
                raise BenchError(msg if msg.startswith(str(suite["path"])) else f"{where}: {msg}") from None
            for s in range(n_seeds):
                cells.append(Cell(suite["name"], t, a, fidelity, s, train, algo, base))
    return cells
