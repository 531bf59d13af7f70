"""Run the cells of a sweep, serially or in local processes (joblib), storing each as it finishes."""

from __future__ import annotations

import contextlib
import os

from joblib import Parallel, delayed, parallel_config
from tqdm.auto import tqdm

from bench.runner import run_cell
from bench.store import ResultStore, code_version


def _run(cell, device, progress, threads):
    return cell.key(), run_cell(cell, device=device, progress=progress, threads=threads)


def run_sweep(cells, out, device: str = "cpu", jobs: int = 0, force: bool = False, backend: str = "local",
              scheduler: str | None = None) -> ResultStore:
    """Run the cells not yet finished in ``out`` (all of them with ``force``); each finished cell is written
    to the store by this process as soon as it comes back, so a killed sweep, or a lost worker, loses no
    finished cell and a re-run resumes where it stopped.

    backend "local": cells in local processes through joblib (``jobs`` of them, default one per core);
    backend "dask": the same joblib calls on a Dask distributed cluster at ``scheduler`` (joblib's dask
    backend); Dask reschedules the cells of a worker that dies."""
    store = ResultStore(out)
    version = code_version()
    for c in cells:
        c.code_version = version
    done = set() if force else store.finished_ids()
    todo = [c for c in cells if c.cell_id() not in done]
    if len(todo) < len(cells):
        print(f"{len(cells) - len(todo)} of {len(cells)} cells already finished in {out}: skipped", flush=True)
    cells = todo
    if not cells:
        return store
    cores = os.cpu_count() or 1
    n_jobs = jobs or (1 if device != "cpu" else min(cores, len(cells)))
    n_jobs = max(1, min(n_jobs, len(cells)))
    threads = max(1, cores // n_jobs)
    bar = tqdm(total=len(cells), desc="cells", unit="cell")
    with contextlib.ExitStack() as stack:
        if backend == "dask":
            from distributed import Client

            stack.enter_context(Client(scheduler))
            stack.enter_context(parallel_config(backend="dask"))
            n_jobs, threads = -1, 1
        if n_jobs == 1:
            results = (_run(c, device, True, threads) for c in cells)
        else:
            results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(_run)(c, device, False, threads) for c in cells)
        for key, (rows, traces, art) in results:
            store.add(rows, traces, art, key)
            status = rows[0]["status"] if rows else "?"
            bar.set_postfix_str(f"{key['algorithm']}/{key['target']}/s{key['seed']}: {status}")
            bar.update()
    bar.close()
    return store
