"""Run the cells of a sweep, serially or in local processes (joblib), storing each as it finishes."""

from __future__ import annotations

import os

from joblib import Parallel, delayed
from tqdm.auto import tqdm

from bench.runner import run_cell
from bench.store import ResultStore


def _run(cell, device, progress, threads):
    return cell.key(), run_cell(cell, device=device, progress=progress, threads=threads)


def run_sweep(cells, out, device: str = "cpu", jobs: int = 0) -> ResultStore:
    store = ResultStore(out)
    cores = os.cpu_count() or 1
    n_jobs = jobs or (1 if device != "cpu" else min(cores, len(cells)))
    n_jobs = max(1, min(n_jobs, len(cells)))
    threads = max(1, cores // n_jobs)
    bar = tqdm(total=len(cells), desc="cells", unit="cell")
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
