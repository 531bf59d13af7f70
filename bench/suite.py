"""Suites are data: a TOML file per suite under bench/suites/ lists targets, algorithms and, per
fidelity, the settings of every cell.

Settings of a cell (algorithm a, target t) at fidelity f are merged in this order, later wins:
``[f.defaults]``, ``[f.algorithms.a]``, ``[f.targets.t]``, ``[f.cells."a/t"]``. Keys that belong to
``TrainConfig`` drive the training loop and evaluation; every other key must be a parameter of the
algorithm's ``Config``, except ``settings``: where the cell's settings come from (``SETTINGS``), merged the same
way and written into every result row so that tables can say which numbers ran at a paper's own settings, and
``deviations``: for a cell labelled "paper, with deviations", the list of what differs from the paper (merged
the same way; the stand-in networks the code declares are added to it). Everything is validated before anything
runs, the labelling rule (``settings_label``) included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import algorithms
import datasets
from algorithms.base import AT_LEAST_1, NONNEG, ConfigError, bounds, build_config
from bench import plugins, registry
from bench.errors import BenchError

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass
class TrainConfig:
    """Training loop and evaluation settings shared by every algorithm. Each field's valid range is its
    ``bounds`` metadata, checked with every other config by ``algorithms.base.build_config``."""

    energy: str = "toy_mlp"
    #: U = f / temperature, f the energy network's output (MLP energies only; algorithms/energies.py MLPEnergy):
    #: the "custom temperature" of Nijkamp et al. 2020's code, T = eps^2 / 2 = the ULA step h, that 000 App. C.1
    #: follows for ULA-EBM; 1: U is the network's output
    temperature: float = field(default=1.0, metadata=bounds(0, lo_open=True))
    dtype: Literal["float32", "float64"] = "float32"
    n_data: int = field(default=60_000, metadata=AT_LEAST_1)
    batch_size: int = field(default=256, metadata=AT_LEAST_1)
    #: training length: ``n_iters``, or ``epochs`` over n_data (n_iters = ceil(epochs * n_data / batch))
    n_iters: int = field(default=0, metadata=NONNEG)
    epochs: float = field(default=0.0, metadata=NONNEG)
    #: iterations between trace points (mode weights over training); 0: only at the end
    eval_every: int = field(default=0, metadata=NONNEG)
    #: evaluation grid resolution per axis, and the coarser grid used for traces
    eval_grid: int = field(default=200, metadata=bounds(2))
    trace_grid: int = field(default=100, metadata=bounds(2))
    #: held-out target samples for the log-density error
    n_eval_samples: int = field(default=10_000, metadata=AT_LEAST_1)
    #: independent chains and draws for R-hat / ESS after training (000 Table 2: 128 chains); split R-hat
    #: needs at least 2 chains of 4 draws; n_chains = 0: no R-hat / ESS
    n_chains: int = field(default=128, metadata=NONNEG)
    n_draws: int = field(default=500, metadata=NONNEG)
    #: draws run and discarded before those n_draws (ours: a fifth of the default n_draws; 001 §4 discards
    #: 400 of 2,000 steps); the sampler's step-size adaptation is frozen for the whole evaluation chain
    burn_in: int = field(default=100, metadata=NONNEG)
    #: negative samples used to estimate their mode weights after training
    n_negatives: int = field(default=8192, metadata=AT_LEAST_1)
    #: exact model samples for the model's mode weights where no grid is used (energies with sample_exact)
    n_model_samples: int = field(default=100_000, metadata=AT_LEAST_1)
    #: stop after this many energy-gradient evaluations (0: no budget), to compare algorithms at equal work
    grad_budget: int = field(default=0, metadata=NONNEG)
    #: record the cell as "timeout" past this many seconds of training (0: no limit)
    time_limit_s: float = field(default=0.0, metadata=NONNEG)
    #: R-hat / ESS of fresh evaluation chains (n_chains x n_draws) at every k-th trace point and the last one
    #: (000 Fig. 6); 0: only after training
    rhat_every: int = field(default=0, metadata=NONNEG)
    #: > 0 and < 1: the learning rate decays linearly from its value to ratio x its value over training
    #: (003 B.2: 1e-4 to 1e-10, a ratio of 1e-6); 1: constant
    lr_final_ratio: float = field(default=1.0, metadata=bounds(0, 1, lo_open=True))
    #: the independent audit of the EBM's mode weights after training (bench/audit.py): chains (0: off), kept
    #: draws and burn-in steps of its flowMC with a mixture proposal; mixture targets only
    audit_chains: int = field(default=0, metadata=NONNEG)
    audit_draws: int = field(default=400, metadata=AT_LEAST_1)
    audit_burn_in: int = field(default=100, metadata=NONNEG)

    def __post_init__(self):
        if self.batch_size > self.n_data:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed n_data ({self.n_data})")
        if self.n_chains == 1 or (self.n_chains and self.n_draws < 4):
            raise ValueError(f"R-hat needs n_chains >= 2 and n_draws >= 4 (n_chains = 0: none), got n_chains = "
                             f"{self.n_chains}, n_draws = {self.n_draws}")

    def iterations(self) -> int:
        if self.n_iters > 0:
            return self.n_iters
        if self.epochs > 0:
            return math.ceil(self.epochs * self.n_data / self.batch_size)
        raise ConfigError("set n_iters or epochs")


TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}

#: the label of a cell the paper ran whose settings or networks are not all the paper's
PAPER_WITH_DEVIATIONS = "paper, with deviations"
#: where a cell's settings come from: "paper" (the paper ran this algorithm on this target, and every training
#: setting and network of the cell is the paper's), "paper, with deviations" (the paper ran it, but some settings are
#: the suite's, where the paper is silent or cannot be followed, or a network stands in for the paper's: the suite
#: file lists them in ``deviations``), "extrapolated" (settings the suite chose where the paper did not run the cell
#: or states none of its settings), "quick" / "smoke" (the suite's shortened settings). Without a ``settings`` key a
#: cell of the quick or smoke fidelity is "quick" / "smoke" and any other cell "extrapolated": "paper" is only ever
#: claimed explicitly. Evaluation choices (burn-in, grids, reference sets) are the same for every cell and are set out
#: in docs/choices.md, not here.
SETTINGS = ("paper", PAPER_WITH_DEVIATIONS, "extrapolated", "quick", "smoke")


def stand_ins(cls, algo, train: TrainConfig, target) -> list[str]:
    """The cell's networks that stand in for a paper's (``Energy.stand_in``, ``TrainingAlgorithm.stand_ins``)."""
    from algorithms.energies import ENERGIES

    energy = getattr(ENERGIES.get(train.energy), "stand_in", "")
    return ([f"energy {train.energy}: {energy}"] if energy else []) + list(cls.stand_ins(algo, target))


def settings_label(where: str, settings, declared, networks: list[str]) -> list[str]:
    """The labelling rule: a cell is "paper" only where nothing deviates (no declared deviation, no stand-in
    network); "paper, with deviations" needs its list of deviations in the suite file; only that label takes one.
    Returns the cell's deviations: the declared ones, then the stand-in networks not already listed."""
    if settings not in SETTINGS:
        raise BenchError(f"{where}: settings must be one of {', '.join(SETTINGS)}, got {settings!r}")
    if not isinstance(declared, list) or not all(isinstance(d, str) and d.strip() for d in declared):
        raise BenchError(f"{where}: deviations must be a list of non-empty strings, got {declared!r}")
    if settings == "paper" and (declared or networks):
        raise BenchError(f"{where}: settings = 'paper' but the cell deviates from the paper "
                         f"({(declared or networks)[0]}); label it settings = '{PAPER_WITH_DEVIATIONS}' and list "
                         "what deviates in deviations = [...]")
    if settings == PAPER_WITH_DEVIATIONS and not declared:
        raise BenchError(f"{where}: settings = '{PAPER_WITH_DEVIATIONS}' needs the list of what deviates from the "
                         "paper: deviations = [\"...\"]")
    if declared and settings != PAPER_WITH_DEVIATIONS:
        raise BenchError(f"{where}: deviations are listed only for settings = '{PAPER_WITH_DEVIATIONS}', not "
                         f"for settings = {settings!r}")
    if settings != PAPER_WITH_DEVIATIONS:
        return []
    return list(declared) + [n for n in networks if n not in declared]


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
    settings: str = ""  # where the settings come from (SETTINGS); a label, not part of cell_id
    deviations: list = field(default_factory=list)  # what differs from the paper (PAPER_WITH_DEVIATIONS); a label
    #: where the cell finds its files: {"data_dir": folder of image data, "inception_weights": file}; locations,
    #: not part of cell_id (the data's identity is the target's version, the weights' is checked by sha256)
    resources: dict = field(default_factory=dict)

    def __post_init__(self):
        self.base = self.base or self.algorithm

    def cell_id(self, code_version: str | None = None, config: dict | None = None) -> str:
        """Hash of everything that determines the result: the cell, its full config, the target's version
        and the code version (``code_version``: the id this cell would have under another one; ``config``: the
        id it would have with that config, see ``config_as_of``). A finished cell with the same id is not
        computed again."""
        target_version = datasets.get_target(self.target).version
        version = self.code_version if code_version is None else code_version
        parts = [self.key(), self.base, target_version, self.config() if config is None else config, version]
        # a plug-in's own source enters the key, so that a changed plug-in re-runs (built-ins: the code version)
        own = [registry.fingerprint(k, n) for k, n in
               (("algorithms", self.base), ("targets", self.target), ("energies", self.train.energy))]
        own += [registry.fingerprint("metrics", n) for n in registry.plug_in_metrics()]
        if any(own):
            parts.append(own)
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def key(self) -> dict:
        return {"suite": self.suite, "target": self.target, "algorithm": self.algorithm,
                "fidelity": self.fidelity, "seed": self.seed}

    def config(self) -> dict:
        return {**dataclasses.asdict(self.train), **dataclasses.asdict(self.algo)}

    def config_as_of(self, old_keys) -> dict | None:
        """This cell's config as code that had only the settings ``old_keys`` would have written it: the
        settings added since are left out, provided each is at its default (which is what the older code did
        without it); None when one of them is not (then the cell differs from what that code ran). Lets a
        committed run resume on code that added a setting (``--resume-across-code``)."""
        config, old_keys = self.config(), set(old_keys)
        added = set(config) - old_keys
        if not added:
            return None
        defaults = {}
        for obj in (self.train, self.algo):
            for f in dataclasses.fields(obj):
                if f.default is not dataclasses.MISSING:
                    defaults[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    defaults[f.name] = f.default_factory()
        missing = object()
        if any(config[k] != defaults.get(k, missing) for k in added):
            return None
        return {k: v for k, v in config.items() if k in old_keys}


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def suite_path(name: str) -> Path:
    """A suite given by name (a file bench/suites/NAME.toml) or by the path of a TOML file (a user's own)."""
    if name.endswith(".toml") or "/" in name or "\\" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise BenchError(f"--suite {name}: no such suite file")
        return path
    path = SUITES_DIR / f"{name}.toml"
    if not path.exists():
        raise BenchError(f"unknown suite {name!r}; valid: {', '.join(available_suites())}, or the path of a "
                         "suite file (NAME.toml)")
    return path


def _names_list(path, data, key) -> list[str]:
    names = data.get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BenchError(f"{path}: '{key}' must be a non-empty list of names")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise BenchError(f"{path}: '{key}' lists {dup!r} twice")
    return names


def load_suite(name: str) -> dict:
    """Read and check the shape of a suite file (names and values are checked by ``resolve_cells``)."""
    path = suite_path(name)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BenchError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{path}: malformed suite file ({e})") from None
    except OSError as e:
        raise BenchError(f"{path}: cannot read the suite file ({e.strerror})") from None
    for key in ("targets", "algorithms", "fidelity"):
        if key not in data:
            raise BenchError(f"{path}: missing '{key}'")
        if key != "fidelity":
            _names_list(path, data, key)
    for key in RESOURCES:
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise BenchError(f"{path}: '{key}' must be a path (a string), got {data[key]!r}")
    fids = data["fidelity"]
    if not isinstance(fids, dict) or not fids or not all(isinstance(v, dict) for v in fids.values()):
        raise BenchError(f"{path}: 'fidelity' must be tables [fidelity.NAME] (e.g. [fidelity.quick]), "
                         f"got {fids!r}")
    for fname, fid in fids.items():
        for sec in ("defaults", "algorithms", "targets", "cells"):
            val = fid.get(sec, {})
            nested = sec != "defaults"
            if not isinstance(val, dict) or (nested and not all(isinstance(v, dict) for v in val.values())):
                what = f"[fidelity.{fname}.{sec}.NAME] tables" if nested else f"a table [fidelity.{fname}.{sec}]"
                raise BenchError(f"{path}: fidelity.{fname}.{sec} must be {what}")
        seeds = fid.get("seeds", 1)
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise BenchError(f"{path}: fidelity.{fname}.seeds must be an integer >= 1, got {seeds!r}")
    variants = data.get("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise BenchError(f"{path}: 'variants' must be tables [variants.NAME]")
    data["name"] = path.stem
    data["path"] = str(path)
    # plug-ins: installed packages' entry points, and the suite file's own [plugins.*] (module:Class)
    plugins.load_entry_points()
    data["plugin_specs"] = plugins.suite_specs(data, path)
    plugins.register_specs(data["plugin_specs"], str(path))
    return data


RESOURCES = ("data_dir", "inception_weights")


def suite_resources(suite: dict, data_dir=None, inception_weights=None) -> dict:
    """Where a run's cells find their files: the folder of image data and the Inception weights file, as given
    (arguments of ``bench.run``: ``--data-dir``, ``--inception-weights``), else as the suite file says
    (``data_dir = "..."``, ``inception_weights = "..."``, relative to the suite file's folder); left out, the
    environment variables EBM_BENCH_DATA / EBM_BENCH_INCEPTION_WEIGHTS apply. Checked now: the folder exists,
    the weights file is torch-fidelity's (sha256)."""
    out = {}
    for key, given, flag in (("data_dir", data_dir, "--data-dir"), ("inception_weights", inception_weights,
                                                                    "--inception-weights")):
        where = flag
        if given is None and key in suite:
            if not isinstance(suite[key], str) or not suite[key]:
                raise BenchError(f"{suite['path']}: '{key}' must be a path (a string), got {suite[key]!r}")
            given, where = Path(suite["path"]).parent / Path(suite[key]).expanduser(), f"{suite['path']}: {key}"
        if given is None:
            continue
        path = Path(given).expanduser().resolve()
        if key == "data_dir" and not path.is_dir():
            raise BenchError(f"{where} {given}: no such folder")
        if key == "inception_weights":
            from metrics.sample_quality import InceptionExtractor, SetupError

            try:
                InceptionExtractor(path)  # exists and is torch-fidelity's file (sha256), before anything runs
            except SetupError as e:
                raise BenchError(str(e)) from None
        out[key] = str(path)
    return out


def _check_names(kind: str, names, valid) -> None:
    bad = [n for n in names if n not in valid]
    if bad:
        raise BenchError(f"unknown {kind} {bad[0]!r}; valid: {', '.join(sorted(valid))}")


def _selection(kind: str, names, suite: dict) -> list[str]:
    """Names picked on the command line: each one of the suite's own, and none twice."""
    valid = suite[f"{kind}s"]
    bad = [n for n in names if n not in valid]
    if bad:
        raise BenchError(f"unknown {kind} {bad[0]!r} for suite {suite['name']}; valid: {', '.join(valid)}")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise BenchError(f"{kind} {dup!r} given twice")
    return list(names)


def _variants(suite: dict) -> dict[str, tuple[str, dict]]:
    """Named variants of an algorithm with fixed parameters (benchopt's ``solver[param=value]``):
    ``[variants.NAME]`` with ``algorithm = BASE`` and the parameters that define the variant."""
    out = {}
    for name, spec in suite.get("variants", {}).items():
        if "," in name or not name.strip():
            # --algorithms splits its values on commas, so such a name could be loaded but never picked
            raise BenchError(f"{suite['path']} [variants.{name}]: a variant's name may not contain ',' (the "
                             f"--algorithms option splits on it) or be blank")
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
    # a suite (or one of its fidelities, which wins) may run a subset of its algorithms by default, e.g. leaving out
    # its diagnostic variants, unless others are named on the command line
    default_algorithms = fid.get("default_algorithms") or suite.get("default_algorithms") or []
    _check_names("algorithm", default_algorithms, suite["algorithms"])
    algos = _selection("algorithm", algorithm_names or default_algorithms or suite["algorithms"], suite)
    _check_names("target", fid.get("default_targets", []), suite["targets"])
    targets = _selection("target", target_names or fid.get("default_targets") or suite["targets"], suite)
    n_seeds = int(seeds if seeds is not None else fid.get("seeds", 1))
    if n_seeds < 1:
        raise BenchError(f"--seeds must be at least 1, got {n_seeds}")
    known_sections = {"seeds", "defaults", "algorithms", "targets", "cells", "description", "default_algorithms",
                      "default_targets"}
    for sec in fid:
        if sec not in known_sections:
            raise BenchError(f"{suite['path']}: [fidelity.{fidelity}] has unknown section {sec!r}; "
                             f"valid: {', '.join(sorted(known_sections))}")

    def params(a):
        return TRAIN_KEYS | {f.name for f in dataclasses.fields(algorithms.ALGORITHMS[base_of[a][0]].Config)}

    # Shared sections ([defaults], [targets.t]) apply each key to the algorithms that have it; a key that
    # no algorithm of the suite has is a typo. [algorithms.a] and [cells."a/t"] are checked strictly.
    labels = {"settings", "deviations"}
    every = set().union(*(params(a) for a in suite["algorithms"])) | labels
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
        own = params(a) | labels
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
            settings = values.pop("settings", fidelity if fidelity in ("quick", "smoke") else "extrapolated")
            declared = values.pop("deviations", [])
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
            deviations = settings_label(where, settings, declared, stand_ins(cls, algo, train, datasets.get_target(t)))
            for s in range(n_seeds):
                cells.append(Cell(suite["name"], t, a, fidelity, s, train, algo, base, settings=settings,
                                  deviations=deviations))
    dry_run(cells, suite["path"])
    return cells


def dry_run(cells: list[Cell], suite_path: str = "") -> None:
    """Build what each cell needs before any cell runs (its target, its energy, its optimiser's parameter
    groups), so that a bad name or a constraint between settings fails now, not after hours of compute. The
    constraints inside one config are checked when it is built (``build_config``)."""
    from algorithms.contrastive import OptimConfig, make_optimizer
    from algorithms.energies import make_energy

    energies = {}
    for c in cells:
        where = f"{suite_path or c.suite} [fidelity.{c.fidelity}] {c.algorithm}/{c.target}"
        key = (c.target, c.train.energy, c.train.temperature)
        try:
            target = datasets.get_target(c.target)
            if target.has("data_files"):
                target.check_data()  # image targets: their files are read and checked now (datasets/images.py)
            if key not in energies:
                t = datasets.get_target(c.target)
                energies[key] = make_energy(c.train.energy, t.dim, t.shape, c.train.temperature)
            if isinstance(c.algo, OptimConfig):
                make_optimizer(energies[key], c.algo)
        except (ValueError, TypeError) as e:
            raise BenchError(f"{where}: {e}") from None
