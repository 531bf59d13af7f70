"""Algorithms, targets, energies and metrics from outside this package: plug-ins, and the two routes they come in by.

A plug-in comes from one of two places:

- an installed package's **entry points**, in the groups ``ebm_bench.algorithms``, ``ebm_bench.targets``,
  ``ebm_bench.energies`` and ``ebm_bench.metrics`` (the entry point's name is the registered name), e.g. in its
  ``pyproject.toml``::

      [project.entry-points."ebm_bench.algorithms"]
      my_ula = "my_package.algo:MyULA"

- a **suite file**'s ``[plugins.algorithms]``, ``[plugins.targets]``, ``[plugins.energies]`` and
  ``[plugins.metrics]`` tables of ``name = "module:Object"`` references; ``module`` is imported with the suite
  file's folder first on the path, so a loose ``my_algo.py`` beside the suite file works. A target or an energy
  may be a member of a parametric family: ``name = { ref = "module:Class", param = value, ... }`` registers
  ``Class.with_params`` (e.g. ``hd_mixture8 = { ref = "datasets.highdim:HDMixture", dim = 8 }``); a target class
  without a name of its own (a family, as ``HDMixture``) is registered the same way, with its defaults.

Either way the class goes through the door the built-ins go through (``bench.registry.register``): the same
checks, the same tables, and ``bench.registry.ORIGINS`` records where it came from (``bench list`` shows it).
Any fault is one ``BenchError`` line naming the plug-in.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path

from bench.errors import BenchError
from bench.registry import KINDS, register, singular, source_file, table

GROUP = "ebm_bench.{kind}"

#: (kind, name) -> the spec that registered a suite-file plug-in: {"ref": "module:Class", "path": folder}
SPECS: dict[tuple[str, str], dict] = {}
_entry_points_loaded = False


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


def member(kind: str, name: str, obj, params: dict, where: str):
    """A family's member with ``params`` (a target or an energy's ``with_params``); a target class without a
    name of its own is a family too. Anything else is returned as it is."""
    family = kind == "targets" and inspect.isclass(obj) and not getattr(obj, "name", "")
    if not params and not family:
        return obj
    if kind not in ("targets", "energies") or not (inspect.isclass(obj) and hasattr(obj, "with_params")):
        raise BenchError(f"{where}: parameters are for a target or an energy class (with_params), not {obj!r}")
    try:
        inspect.signature(obj.__init__).bind(None, *([0] if kind == "energies" else []), **params)
    except TypeError as e:
        raise BenchError(f"{where}: {obj.__name__} does not take these parameters ({e})") from None
    return obj.with_params(name, **params) if kind == "targets" else obj.with_params(**params)


def register_specs(specs: dict, where: str = "") -> None:
    """Register the plug-ins of a suite file: {kind: {name: {"ref": "module:Object", "path": folder,
    "params": {...}}}}."""
    for kind, entries in specs.items():
        for name, spec in entries.items():
            if SPECS.get((kind, name)) == spec and name in table(kind):
                continue  # the same spec again (e.g. a results folder's record of it): already registered
            w = f"{where} [plugins.{kind}] {name}" if where else f"plug-in {singular(kind)} {name!r}"
            w = f"{w} = {spec['ref']!r}"
            params = spec.get("params") or {}
            obj = member(kind, name, load_ref(spec["ref"], spec.get("path"), w), params, w)
            shown = "".join(f", {k}={v!r}" for k, v in params.items())
            register(kind, name, obj, f"{source_file(obj)} ({spec['ref']}{shown})", w)
            SPECS[(kind, name)] = dict(spec)


def suite_specs(suite_data: dict, path: Path) -> dict:
    """The ``[plugins.*]`` tables of a suite file as specs; their modules are looked up beside the file."""
    table = suite_data.get("plugins", {})
    if not isinstance(table, dict):
        raise BenchError(f"{path}: 'plugins' must be tables {', '.join(f'[plugins.{k}]' for k in KINDS)}")
    folder = str(Path(path).resolve().parent)
    out = {}
    for kind, entries in table.items():
        if kind not in KINDS:
            raise BenchError(f"{path}: unknown section [plugins.{kind}]; valid: "
                             f"{', '.join(f'[plugins.{k}]' for k in KINDS)}")
        ok = isinstance(entries, dict) and all(
            isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("ref"), str)) for v in entries.values())
        if not ok:
            raise BenchError(f"{path}: [plugins.{kind}] must map names to 'module:Class' strings or to tables "
                             "{ ref = 'module:Class', parameter = value, ... }")
        out[kind] = {}
        for name, v in entries.items():
            ref, params = (v, {}) if isinstance(v, str) else (v["ref"], {k: x for k, x in v.items() if k != "ref"})
            out[kind][name] = {"ref": ref, "path": folder, **({"params": params} if params else {})}
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
            where = f"plug-in {singular(kind)} {ep.name!r} (entry point {ep.value!r} of {dist})"
            try:
                obj = ep.load()
            except Exception as e:  # noqa: BLE001
                _entry_points_loaded = False
                raise BenchError(f"{where}: loading it raised {type(e).__name__}: {e}") from None
            try:
                register(kind, ep.name, member(kind, ep.name, obj, {}, where), f"entry point of {dist}", where)
            except BenchError:
                _entry_points_loaded = False
                raise


def used_specs(cells) -> dict:
    """The suite-file plug-ins a list of cells uses (so that a worker or a later reader can register them): their
    algorithms, targets and energies, and every suite-file metric (measured in every cell)."""
    out: dict = {}
    for c in cells:
        for kind, name in (("algorithms", c.base), ("targets", c.target), ("energies", c.train.energy)):
            if (kind, name) in SPECS:
                out.setdefault(kind, {})[name] = SPECS[(kind, name)]
    for (kind, name), spec in SPECS.items():
        if kind == "metrics" and cells:
            out.setdefault(kind, {})[name] = spec
    return out


__all__ = ["GROUP", "SPECS", "load_entry_points", "load_ref", "register_specs", "suite_specs", "used_specs"]
