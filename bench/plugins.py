"""Algorithms, targets and energies from outside this package: plug-ins, and the two routes they come in by.

A plug-in comes from one of two places:

- an installed package's **entry points**, in the groups ``ebm_bench.algorithms``, ``ebm_bench.targets`` and
  ``ebm_bench.energies`` (the entry point's name is the registered name), e.g. in its ``pyproject.toml``::

      [project.entry-points."ebm_bench.algorithms"]
      my_ula = "my_package.algo:MyULA"

- a **suite file**'s ``[plugins.algorithms]``, ``[plugins.targets]`` and ``[plugins.energies]`` tables of
  ``name = "module:Class"`` references; ``module`` is imported with the suite file's folder first on the path,
  so a loose ``my_algo.py`` beside the suite file works.

Either way the class goes through the door the built-ins go through (``bench.registry.register``): the same
checks, the same tables, and ``bench.registry.ORIGINS`` records where it came from (``bench list`` shows it).
Any fault is one ``BenchError`` line naming the plug-in.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from pathlib import Path

from bench.errors import BenchError
from bench.registry import KINDS, register, singular, source_file

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


def register_specs(specs: dict, where: str = "") -> None:
    """Register the plug-ins of a suite file: {kind: {name: {"ref": "module:Class", "path": folder}}}."""
    for kind, entries in specs.items():
        for name, spec in entries.items():
            w = f"{where} [plugins.{kind}] {name}" if where else f"plug-in {singular(kind)} {name!r}"
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
            where = f"plug-in {singular(kind)} {ep.name!r} (entry point {ep.value!r} of {dist})"
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


__all__ = ["GROUP", "SPECS", "load_entry_points", "load_ref", "register_specs", "suite_specs", "used_specs"]
