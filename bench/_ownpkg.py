"""Make ``import datasets`` resolve to this suite's own package.

The design card fixes a top-level package named ``datasets``, which collides with Hugging Face's
``datasets`` when both are installed in one environment: an editable install puts this checkout *after*
site-packages on ``sys.path``, so a plain ``import datasets`` would find theirs. Importing any of this
suite's harness (``import bench``) first loads ours explicitly from this checkout and binds it to
``sys.modules["datasets"]``, so every later ``import datasets`` gets it. (``algorithms`` and ``metrics`` do not
use ``datasets``, and import nothing of ``bench``.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_OWN = ROOT / "datasets"


def ensure_own_datasets() -> None:
    mod = sys.modules.get("datasets")
    if mod is not None:
        if Path(getattr(mod, "__file__", "") or "").resolve().parent == _OWN:
            return
        raise ImportError(
            f"another package named 'datasets' ({getattr(mod, '__file__', '?')}) was imported before "
            "ebm-bench; import bench/algorithms/metrics first"
        )
    spec = importlib.util.spec_from_file_location(
        "datasets", _OWN / "__init__.py", submodule_search_locations=[str(_OWN)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["datasets"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["datasets"]
        raise
