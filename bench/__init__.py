"""ebm-bench harness: CLI, suites as data, runner, result store, tables and plots.

Python API: ``bench.run(suite, fidelity=..., algorithms=..., targets=..., seeds=..., out=...)`` returns the
results as a pandas DataFrame; ``bench.load(results_dir)``, ``bench.table(results_dir)`` (dict of DataFrames)
and ``bench.plot(results_dir)`` read a results folder; ``bench.plan(suite, ...)`` projects a sweep's cost."""

from bench._ownpkg import ensure_own_datasets

ensure_own_datasets()

from bench import registry  # noqa: E402,F401  (registers the built-in algorithms, targets and energies)
from bench.api import load, plan, plot, run, table  # noqa: E402  (the Python API; the CLI is a thin layer over it)

__all__ = ["load", "plan", "plot", "run", "table"]
