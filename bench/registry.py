"""The one registry of algorithms, targets, energies and metrics: the suite's own and plug-ins come in by one door.

Every entry, built-in or not, is added by ``register(kind, name, obj, source, where)``, which checks it against
its kind's contract (``check``) and records where it came from (``ORIGINS``: "built-in", "entry point of <dist>
<version>", or "<file> (<module:Class>)"). The built-ins are the ``BUILT_IN`` lists of the packages that define
them (``algorithms``, ``datasets``, ``algorithms.energies`` and ``algorithms.conv_energies``,
``metrics.catalogue``), registered when this module is imported; plug-ins come from suite files and entry points
(``bench.plugins``).

The registered entries live in the tables the rest of the suite reads: ``algorithms.ALGORITHMS``,
``datasets.TARGETS``, ``algorithms.energies.ENERGIES`` (name -> class) and ``metrics.catalogue.METRICS`` (name ->
``Metric``). Only ``register`` writes them.

The checks (one set for every entry) are those a class can pass without running anything expensive: the right
base class, every abstract method implemented, a ``name`` equal to the registered name (a target or algorithm),
a ``Config`` dataclass that builds from its defaults (an algorithm), a target that builds, has one box interval
per dimension, mode weights that sum to 1 and, unless it reads data files, samples of shape (n, dim), a metric
whose fields are valid (known quantities, a compute function, a direction where it is gated). What needs
training or many samples is ``bench test-plugin``'s (bench/learning.py, bench/target_checks.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path

from bench.errors import BenchError

KINDS = ("algorithms", "targets", "energies", "metrics")
BUILT_IN = "built-in"

#: (kind, name) -> where it came from: "built-in", "entry point of <dist> <version>", or "<file> (<module:Class>)"
ORIGINS: dict[tuple[str, str], str] = {}


def table(kind: str) -> dict:
    """The registered entries of ``kind``, name -> class."""
    import algorithms
    import datasets
    from algorithms import energies
    from metrics import catalogue

    tables = {"algorithms": algorithms.ALGORITHMS, "targets": datasets.TARGETS, "energies": energies.ENERGIES,
              "metrics": catalogue.METRICS}
    if kind not in tables:
        raise BenchError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    return tables[kind]


def origin(kind: str, name: str) -> str:
    return ORIGINS.get((kind, name), BUILT_IN)


def singular(kind: str) -> str:
    return {"algorithms": "algorithm", "targets": "target", "energies": "energy", "metrics": "metric"}[kind]


# ------------------------------------------------------------------------------------------------- checks
def check(kind: str, name: str, obj, where: str) -> None:
    """The contract of ``kind``, checked on ``obj``; BenchError naming the entry otherwise."""
    from algorithms.base import ConfigError, TrainingAlgorithm, build_config
    from algorithms.energies import Energy
    from datasets.base import Target

    if kind == "metrics":
        _check_metric(name, obj, where)
        return
    base = {"algorithms": TrainingAlgorithm, "targets": Target, "energies": Energy}[kind]
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise BenchError(f"{where}: {obj!r} is not a subclass of {base.__module__}.{base.__name__}")
    missing = sorted(getattr(obj, "__abstractmethods__", ()))
    if missing:
        raise BenchError(f"{where}: {obj.__name__} does not implement {', '.join(missing)}")
    if kind in ("algorithms", "targets") and getattr(obj, "name", "") != name:
        raise BenchError(f"{where}: {obj.__name__}.name must be {name!r} (its registered name), "
                         f"got {getattr(obj, 'name', '')!r}")
    if kind == "algorithms":
        cfg = getattr(obj, "Config", None)
        if not (inspect.isclass(cfg) and dataclasses.is_dataclass(cfg)):
            raise BenchError(f"{where}: {obj.__name__}.Config must be a dataclass of hyper-parameters, got {cfg!r}")
        try:
            build_config(cfg, {}, f"{where}: {obj.__name__}.Config")
        except ConfigError as e:
            raise BenchError(str(e)) from None
        except Exception as e:  # noqa: BLE001  (a plug-in's own code: any fault is one line naming it)
            raise BenchError(f"{where}: {obj.__name__}.Config() with its defaults raised "
                             f"{type(e).__name__}: {e}") from None
    if kind == "targets":
        _check_target(obj, where)


def _check_metric(name: str, m, where: str) -> None:
    from metrics.catalogue import QUANTITIES, Gate, Metric

    if not isinstance(m, Metric):
        raise BenchError(f"{where}: {m!r} is not a metrics.catalogue.Metric")
    if m.name != name:
        raise BenchError(f"{where}: the metric's name must be {name!r} (its registered name), got {m.name!r}")
    if not (isinstance(m.description, str) and m.description.strip()):
        raise BenchError(f"{where}: metric {name!r} needs a description (a phrase saying what it measures)")
    unknown = [n for n in m.needs if n not in QUANTITIES]
    if unknown:
        raise BenchError(f"{where}: metric {name!r} needs unknown quantity {unknown[0]!r}; valid: "
                         f"{', '.join(QUANTITIES)}")
    if m.reported_by:
        if m.compute is not None and not m.needs:
            raise BenchError(f"{where}: metric {name!r} has a compute function but no needs")
    elif not (callable(m.compute) and m.needs):
        raise BenchError(f"{where}: metric {name!r} needs a compute function of its needs (or reported_by)")
    if m.better not in (-1, 0, 1):
        raise BenchError(f"{where}: metric {name!r}: better must be -1 (lower is better), +1 or 0, got {m.better!r}")
    if m.gate is not None:
        if not isinstance(m.gate, Gate) or m.gate.scale not in ("log", "linear"):
            raise BenchError(f"{where}: metric {name!r}: gate must be a Gate with scale 'log' or 'linear'")
        if m.better == 0:
            raise BenchError(f"{where}: metric {name!r} is gated but says no direction (better = 0)")
    for inst in m.headlines():
        if inst != m.name and not (m.pattern is not None and m.pattern.fullmatch(inst)):
            raise BenchError(f"{where}: metric {name!r}: headline names {inst!r}, which is not one of its instances")


def _check_target(cls, where: str) -> None:
    try:
        t = cls()
        dim, box = int(t.dim), t.box
        x = None if t.has("data_files") else t.sample(4)
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"{where}: building {cls.__name__}() and drawing 4 samples raised "
                         f"{type(e).__name__}: {e}") from None
    if dim < 1 or len(box) != dim or not all(len(b) == 2 and b[0] < b[1] for b in box):
        raise BenchError(f"{where}: {cls.__name__}.box must give one (low, high) pair per dimension (dim {dim}), "
                         f"got {box!r}")
    if x is not None and tuple(x.shape) != (4, dim):
        raise BenchError(f"{where}: {cls.__name__}.sample(4) must have shape (4, {dim}), got {tuple(x.shape)}")
    if t.has_modes:
        w = t.mode_weights
        if len(w) != t.n_modes or abs(float(w.sum()) - 1) > 1e-6:
            raise BenchError(f"{where}: {cls.__name__}.mode_weights must be {t.n_modes} weights summing to 1")


# ------------------------------------------------------------------------------------------------- register
def register(kind: str, name: str, obj, source: str, where: str) -> None:
    """Check ``obj`` and add it to ``kind``'s table under ``name``; the same object again is a no-op."""
    if kind not in KINDS:
        raise BenchError(f"{where}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    reg = table(kind)
    if name in reg:
        if reg[name] is obj:
            return
        raise BenchError(f"{where}: {singular(kind)} {name!r} is already registered ({origin(kind, name)})")
    check(kind, name, obj, where)
    reg[name] = obj
    ORIGINS[(kind, name)] = source


def built_ins() -> dict[str, dict]:
    """kind -> {name: object} of the suite's own entries, from the packages that define them."""
    import algorithms
    import datasets
    from algorithms import conv_energies, energies
    from metrics import catalogue

    return {"algorithms": {cls.name: cls for cls in algorithms.BUILT_IN},
            "targets": {cls.name: cls for cls in datasets.BUILT_IN},
            "energies": {**energies.BUILT_IN, **conv_energies.BUILT_IN},
            "metrics": {m.name: m for m in catalogue.BUILT_IN}}


def register_built_ins() -> None:
    """Register the suite's own entries through ``register`` (once; again is a no-op)."""
    for kind, entries in built_ins().items():
        for name, obj in entries.items():
            register(kind, name, obj, BUILT_IN, f"built-in {singular(kind)} {name!r}")


def plug_in_metrics() -> list[str]:
    """The registered metrics that are plug-ins: measured in every cell, so part of every cell's key."""
    return [n for n in table("metrics") if origin("metrics", n) != BUILT_IN]


def source_file(obj) -> str:
    if not inspect.isclass(obj) and callable(getattr(obj, "compute", None)):  # a metric: its compute's file
        obj = obj.compute
    try:
        return str(Path(inspect.getsourcefile(obj)).resolve())
    except (TypeError, OSError):
        return "?"


def fingerprint(kind: str, name: str) -> str:
    """A hash of a plug-in's source file (and its parameters for a family member): it enters the cell's key, so
    that a changed plug-in re-runs. Empty for a built-in (the code version covers those)."""
    if origin(kind, name) == BUILT_IN:
        return ""
    obj = table(kind)[name]
    params = getattr(obj, "params", None) if inspect.isclass(obj) else None
    try:
        data = Path(source_file(obj)).read_bytes()
    except OSError:
        data = b""
    what = [getattr(obj, "__module__", ""), getattr(obj, "__qualname__", type(obj).__qualname__)]
    head = json.dumps([kind, name, *what, params or {}], sort_keys=True, default=repr).encode()
    return hashlib.sha1(head + data).hexdigest()[:12]


register_built_ins()

__all__ = ["BUILT_IN", "KINDS", "ORIGINS", "check", "fingerprint", "origin", "register", "register_built_ins",
           "source_file", "table"]
