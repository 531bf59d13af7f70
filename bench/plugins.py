"""Algorithms, targets and energies from outside this package: plug-ins.

A plug-in comes from one of two places:

- an installed package's **entry points**, in the groups ``ebm_bench.algorithms``, ``ebm_bench.targets`` and
  ``ebm_bench.energies`` (the entry point's name is the registered name), e.g. in its ``pyproject.toml``::

      [project.entry-points."ebm_bench.algorithms"]
      my_ula = "my_package.algo:MyULA"

- a **suite file**'s ``[plugins.algorithms]``, ``[plugins.targets]`` and ``[plugins.energies]`` tables of
  ``name = "module:Class"`` references; ``module`` is imported with the suite file's folder first on the path,
  so a loose ``my_algo.py`` beside the suite file works.

Either way the class is checked the way the built-ins are (the right base class, every abstract method
implemented, a ``Config`` dataclass that builds from its defaults, a ``name`` equal to its registered name), and
any fault is one ``BenchError`` line naming the plug-in. Registered plug-ins go into the same registries as the
built-ins (``algorithms.ALGORITHMS``, ``datasets.TARGETS``, ``algorithms.energies.ENERGIES``), so the rest of
the suite treats them alike; ``ORIGINS`` records where each entry came from (``bench list`` shows it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from bench.errors import BenchError

KINDS = ("algorithms", "targets", "energies")
GROUP = "ebm_bench.{kind}"
BUILT_IN = "built-in"

#: (kind, name) -> where it came from: "built-in", "entry point <dist> <version>", or "<file> (suite <path>)"
ORIGINS: dict[tuple[str, str], str] = {}
#: (kind, name) -> the spec that registered a suite-file plug-in: {"ref": "module:Class", "path": folder}
SPECS: dict[tuple[str, str], dict] = {}
_entry_points_loaded = False


def registry(kind: str) -> dict:
    import algorithms
    import datasets
    from algorithms import energies

    return {"algorithms": algorithms.ALGORITHMS, "targets": datasets.TARGETS, "energies": energies.ENERGIES}[kind]


def origin(kind: str, name: str) -> str:
    return ORIGINS.get((kind, name), BUILT_IN)


def _singular(kind: str) -> str:
    return {"algorithms": "algorithm", "targets": "target", "energies": "energy"}[kind]


# ------------------------------------------------------------------------------------------------- checks
def check_plugin(kind: str, name: str, obj, where: str) -> None:
    """The built-ins' contract, checked on a plug-in's class; BenchError naming the plug-in otherwise."""
    from algorithms.base import ConfigError, TrainingAlgorithm, build_config
    from algorithms.energies import Energy
    from datasets.base import Target

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


def _check_target(cls, where: str) -> None:
    try:
        t = cls()
        dim, box = int(t.dim), t.box
        x = t.sample(4)
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"{where}: building {cls.__name__}() and drawing 4 samples raised "
                         f"{type(e).__name__}: {e}") from None
    if dim < 1 or len(box) != dim or not all(len(b) == 2 and b[0] < b[1] for b in box):
        raise BenchError(f"{where}: {cls.__name__}.box must give one (low, high) pair per dimension (dim {dim}), "
                         f"got {box!r}")
    if tuple(x.shape) != (4, dim):
        raise BenchError(f"{where}: {cls.__name__}.sample(4) must have shape (4, {dim}), got {tuple(x.shape)}")
    if t.has_modes:
        w = t.mode_weights
        if len(w) != t.n_modes or abs(float(w.sum()) - 1) > 1e-6:
            raise BenchError(f"{where}: {cls.__name__}.mode_weights must be {t.n_modes} weights summing to 1")


# ------------------------------------------------------------------------------------------------- register
def register(kind: str, name: str, obj, source: str, where: str) -> None:
    """Check ``obj`` and add it to ``kind``'s registry under ``name``; the same class again is a no-op."""
    if kind not in KINDS:
        raise BenchError(f"{where}: unknown plug-in kind {kind!r}; valid: {', '.join(KINDS)}")
    reg = registry(kind)
    if name in reg:
        if reg[name] is obj:
            return
        raise BenchError(f"{where}: {_singular(kind)} {name!r} is already registered ({origin(kind, name)})")
    check_plugin(kind, name, obj, where)
    reg[name] = obj
    ORIGINS[(kind, name)] = source


def load_ref(ref: str, folder: str | None, where: str):
    """The object a ``module:Class`` reference names, importing ``module`` with ``folder`` first on the path."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise BenchError(f"{where}: expected a reference 'module:Class', got {ref!r}")
    mod_name, attr = ref.split(":")
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise BenchError(f"{where}: no module {mod_name!r} (looked beside the suite file, in {folder}, "
                             "and in the installed packages)") from None
        raise BenchError(f"{where}: importing {mod_name} failed: {e}") from None
    except Exception as e:  # noqa: BLE001  (a plug-in's own code)
        raise BenchError(f"{where}: importing {mod_name} raised {type(e).__name__}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BenchError(f"{where}: module {mod_name} ({getattr(module, '__file__', '?')}) has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def source_file(obj) -> str:
    try:
        return str(Path(inspect.getsourcefile(obj)).resolve())
    except (TypeError, OSError):
        return "?"


def register_specs(specs: dict, where: str = "") -> None:
    """Register the plug-ins of a suite file: {kind: {name: {"ref": "module:Class", "path": folder}}}."""
    for kind, entries in specs.items():
        for name, spec in entries.items():
            w = f"{where} [plugins.{kind}] {name}" if where else f"plug-in {_singular(kind)} {name!r}"
            obj = load_ref(spec["ref"], spec.get("path"), f"{w} = {spec['ref']!r}")
            register(kind, name, obj, f"{source_file(obj)} ({spec['ref']})", f"{w} = {spec['ref']!r}")
            SPECS[(kind, name)] = dict(spec)


def suite_specs(suite_data: dict, path: Path) -> dict:
    """The ``[plugins.*]`` tables of a suite file as specs; their modules are looked up beside the file."""
    table = suite_data.get("plugins", {})
    if not isinstance(table, dict):
        raise BenchError(f"{path}: 'plugins' must be tables [plugins.algorithms], [plugins.targets], "
                         "[plugins.energies]")
    folder = str(Path(path).resolve().parent)
    out = {}
    for kind, entries in table.items():
        if kind not in KINDS:
            raise BenchError(f"{path}: unknown section [plugins.{kind}]; valid: "
                             f"{', '.join(f'[plugins.{k}]' for k in KINDS)}")
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise BenchError(f"{path}: [plugins.{kind}] must map names to 'module:Class' strings")
        out[kind] = {name: {"ref": ref, "path": folder} for name, ref in entries.items()}
    return out


def load_entry_points() -> None:
    """Register every installed package's plug-ins (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for kind in KINDS:
        for ep in sorted(entry_points(group=GROUP.format(kind=kind)), key=lambda e: e.name):
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            where = f"plug-in {_singular(kind)} {ep.name!r} (entry point {ep.value!r} of {dist})"
            try:
                obj = ep.load()
            except Exception as e:  # noqa: BLE001
                _entry_points_loaded = False
                raise BenchError(f"{where}: loading it raised {type(e).__name__}: {e}") from None
            try:
                register(kind, ep.name, obj, f"entry point of {dist}", where)
            except BenchError:
                _entry_points_loaded = False
                raise


def used_specs(cells) -> dict:
    """The suite-file plug-ins a list of cells uses (so that a worker or a later reader can register them)."""
    out: dict = {}
    for c in cells:
        for kind, name in (("algorithms", c.base), ("targets", c.target), ("energies", c.train.energy)):
            if (kind, name) in SPECS:
                out.setdefault(kind, {})[name] = SPECS[(kind, name)]
    return out


def fingerprint(kind: str, name: str) -> str:
    """A hash of a plug-in's source file (and its distribution for an entry point): it enters the cell's key,
    so that a changed plug-in re-runs. Empty for a built-in (the code version covers those)."""
    if origin(kind, name) == BUILT_IN:
        return ""
    obj = registry(kind)[name]
    try:
        data = Path(source_file(obj)).read_bytes()
    except OSError:
        data = b""
    head = json.dumps([kind, name, obj.__module__, obj.__qualname__]).encode()
    return hashlib.sha1(head + data).hexdigest()[:12]


__all__ = ["GROUP", "KINDS", "ORIGINS", "check_plugin", "fingerprint", "load_entry_points", "load_ref", "origin",
           "register", "register_specs", "suite_specs", "used_specs"]
