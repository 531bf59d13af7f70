"""The Python API: ``bench.run``, ``bench.plan``, ``bench.load``, ``bench.table``, ``bench.plot``. The command
line is a thin layer over these functions; they raise ``bench.errors.BenchError`` (one line: what and where) on
bad input, before any compute is spent, and write nothing then.

    import bench
    res = bench.run("toy2d", fidelity="smoke", algorithms=["ula_ebm", "cd"], targets=["two_mode"], seeds=2)
    res.pivot_table(index="algorithm", columns="metric", values="value")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError

if TYPE_CHECKING:
    import pandas as pd


def default_out(suite: str, fidelity: str) -> Path:
    """results/<suite>-<fidelity> under the working directory (never inside the installed package)."""
    return Path("results") / f"{Path(suite).stem}-{fidelity}"


def check_device(device: str) -> str:
    import torch

    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__})")
        return device
    raise BenchError(f"invalid --device {device!r}; valid: cpu, cuda, cuda:N")


def _names(names, what: str):
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not all(isinstance(n, str) for n in names):
        raise BenchError(f"{what} must be names (strings), got {names!r}")
    return names


def resolve(suite: str, fidelity: str = "quick", algorithms=None, targets=None, seeds: int | None = None,
            out: str | Path | None = None, device: str = "cpu", jobs: int = 0, budget: int | None = None,
            cell_timeout: float | None = None, backend: str = "local", scheduler: str | None = None,
            data_dir: str | Path | None = None, inception_weights: str | Path | None = None):
    """The checks ``run`` and ``plan`` share (names, values, the suite's resources, every cell built, the device,
    ``out`` writable): returns (suite data, cells, device, out). A BenchError (one line) on bad input; nothing is
    written."""
    from bench.store import check_writable
    from bench.suite import load_suite, resolve_cells, suite_resources
    from datasets.images import use_data_dir

    data = load_suite(suite)
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int)):
        raise BenchError(f"--seeds must be an integer, got {seeds!r}")
    resources = suite_resources(data, data_dir, inception_weights)
    use_data_dir(resources.get("data_dir"))  # the suite's image files are read and checked when it is resolved
    cells = resolve_cells(data, fidelity, _names(algorithms, "--algorithms"), _names(targets, "--targets"), seeds)
    for c in cells:
        c.resources = dict(resources)
    device = check_device(device)
    if jobs < 0:
        raise BenchError(f"-j must be >= 0, got {jobs}")
    for flag, value, field in (("--budget", budget, "grad_budget"), ("--cell-timeout", cell_timeout, "time_limit_s")):
        if value is not None:
            if not (math.isfinite(value) and value > 0):
                raise BenchError(f"{flag} must be a positive number, got {value}")
            for c in cells:
                setattr(c.train, field, value)
    if backend not in ("local", "dask"):
        raise BenchError(f"invalid --backend {backend!r}; valid: local, dask")
    if backend == "dask":
        if not scheduler:
            raise BenchError("--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise BenchError("--backend dask needs dask[distributed]: pip install 'ebm-bench[dask]'") from None
    out = Path(out) if out is not None else default_out(suite, fidelity)
    check_writable(out, "--out")
    return data, cells, device, out


def run(suite: str, fidelity: str = "quick", algorithms=None, targets=None, seeds: int | None = None,
        out: str | Path | None = None, device: str = "cpu", jobs: int = 0, force: bool = False,
        budget: int | None = None, cell_timeout: float | None = None, backend: str = "local",
        scheduler: str | None = None, connect_timeout_s: float = 10, data_dir: str | Path | None = None,
        inception_weights: str | Path | None = None, resume_across_code: bool = False,
        stack_seeds: bool = False, checkpoint_every_min: float | None = None) -> pd.DataFrame:
    """Run the cells of ``suite`` (a name, or the path of a suite file) at ``fidelity`` that are not finished in
    ``out`` (default ``results/<suite>-<fidelity>``), and return the results of all the selected cells as a
    long-format DataFrame: one row per run and metric (columns suite, target, algorithm, fidelity, seed, metric,
    value, status, config, work counts, ...). Every cell is validated before the first one runs. ``data_dir``:
    the folder of image data files; ``inception_weights``: torch-fidelity's Inception weights file (Inception FID
    / IS); either may also be given in the suite file (``bench.suite.suite_resources``). SIGINT, SIGTERM or SIGHUP
    during the sweep (called from the main thread) abandons the cells in flight, ends their processes and raises
    ``bench.errors.Interrupted`` (a KeyboardInterrupt) saying which cells are saved.

    ``resume_across_code``: a cell finished in ``out`` under another code version (everything else the same)
    counts as finished, and its rows (with the code version that produced them) are kept and returned; by
    default a cell is finished only under this code version (``bench.sweep.finished_as``).

    ``stack_seeds``: the seeds of a cell train together as one stacked model in one process
    (``bench.runner.run_stack``), each stored as its own cell with its run alone's results up to rounding.

    ``checkpoint_every_min`` (0: none; default ``bench.checkpoint.DEFAULT_EVERY_MIN``): each cell (or stack) in
    training saves its state in ``out/checkpoints`` every so many minutes, and a stopped run resumes there
    (``bench.checkpoint``; local backend only)."""
    from bench.checkpoint import DEFAULT_EVERY_MIN
    from bench.store import ResultStore
    from bench.sweep import finished_as, run_sweep

    every = DEFAULT_EVERY_MIN if checkpoint_every_min is None else checkpoint_every_min
    if isinstance(every, bool) or not isinstance(every, int | float) or not math.isfinite(every) or every < 0:
        raise BenchError(f"--checkpoint-every {every}: expected minutes >= 0 (0: no checkpoints)")
    data, cells, device, out = resolve(suite, fidelity, algorithms, targets, seeds, out, device, jobs, budget,
                                       cell_timeout, backend, scheduler, data_dir, inception_weights)
    run_sweep(cells, out, device=device, jobs=jobs, force=force, backend=backend, scheduler=scheduler,
              connect_timeout_s=connect_timeout_s, across_code=resume_across_code, stack_seeds=stack_seeds,
              checkpoint_every_s=every * 60)
    store = ResultStore(out)
    store.record_suite(data["name"], data["path"])
    res = store.results()
    ids = set(finished_as(cells, store, across_code=resume_across_code).values())
    return res[res["cell_id"].isin(ids)].reset_index(drop=True)


def plan(suite: str, fidelity: str = "quick", algorithms=None, targets=None, seeds: int | None = None,
         out: str | Path | None = None, device: str = "cpu", jobs: int = 0, budget: int | None = None,
         cell_timeout: float | None = None, resume_across_code: bool = False, iters: int = 50,
         seconds: float = 2.0, warmup: int = 2, progress: bool = True, data_dir: str | Path | None = None,
         inception_weights: str | Path | None = None, stack_seeds: bool = False):
    """The projected cost of ``run`` with the same arguments, measured on this machine before anything runs
    (``bench.planner``): every distinct cell configuration (cells that differ only by seed share one) is run once
    through the runner, cut short, and its setup, training iterations, trace points, evaluation chains and
    audit are timed and extrapolated to the full run. Validates exactly as ``run`` does (the same errors);
    writes nothing. ``out`` (optional): cells already finished there are left out, as ``run`` would skip them.
    ``iters`` / ``seconds`` / ``warmup``: at most this many timed training iterations per configuration, or fewer
    once ``seconds`` of CPU time are spent (at least 3), after ``warmup`` untimed ones. Returns a
    ``bench.planner.Plan`` (``str(plan)`` is the printed report, ``plan.configs`` a DataFrame). ``stack_seeds``:
    project ``run(..., stack_seeds=True)``, the training of the seeds that stack timed as they train together."""
    from bench.planner import make_plan

    if not (isinstance(iters, int) and iters >= 1):
        raise BenchError(f"--iters must be an integer >= 1, got {iters!r}")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise BenchError(f"--warmup must be an integer >= 0, got {warmup!r}")
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise BenchError(f"--seconds must be a positive number, got {seconds!r}")
    explicit_out = out is not None
    _, cells, device, out = resolve(suite, fidelity, algorithms, targets, seeds, out, device, jobs, budget,
                                    cell_timeout, data_dir=data_dir, inception_weights=inception_weights)
    return make_plan(cells, device, jobs, out if explicit_out else None, resume_across_code, iters=iters,
                     seconds=seconds, warmup=warmup, progress=progress, stack_seeds=stack_seeds)


def _store(results_dir):
    from bench.store import RESULTS, ResultStore

    out = Path(results_dir)
    if not (out / RESULTS).exists():
        raise BenchError(f"{out}: no {RESULTS} (run 'python -m bench run' first or pass --results)")
    return ResultStore(out)


def load(results_dir, what: str = "results") -> pd.DataFrame:
    """A results folder's ``results`` (one row per run x metric) or ``traces`` (metrics over training),
    checked, as a DataFrame."""
    if what not in ("results", "traces"):
        raise BenchError(f"invalid what={what!r}; valid: results, traces")
    store = _store(results_dir)
    res = store.results()
    return res if what == "results" else store.traces()


def table(results_dir, save: bool = True) -> dict[str, pd.DataFrame]:
    """The tables of a results folder by name (paper tables beside the published numbers, paired differences,
    key metrics, mode weights, work, status, summary); with ``save``, also written to <results_dir>/tables/."""
    from bench.report import make_tables, write_tables

    store = _store(results_dir)
    if save:
        write_tables(store)
    return {name: df for name, _, df in make_tables(store)}


def plot(results_dir, x: str = "iteration") -> list[Path]:
    """Draw the figures of a results folder into <results_dir>/figures/; returns their paths. ``x``: iteration
    or work (energy-gradient evaluations)."""
    from bench import plots
    from bench.store import check_writable

    if x not in ("iteration", "work"):
        raise BenchError(f"invalid --x {x!r}; valid: iteration, work")
    store = _store(results_dir)
    store.results()
    check_writable(store.out, "--results")
    made = plots.make_all(store, x="grad_evals" if x == "work" else "iteration")
    if not made:
        what = "no work counts in traces.csv (older results)" if x == "work" else "no finished cells"
        raise BenchError(f"{results_dir}: nothing to plot ({what})")
    return made


__all__ = ["load", "plan", "plot", "run", "table"]
