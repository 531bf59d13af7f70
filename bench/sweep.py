"""Run the cells of a sweep, serially or in local processes (joblib), storing each as it finishes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import pickle
import signal
import threading

from joblib import Parallel, delayed, parallel_config
from tqdm.auto import tqdm

from algorithms.base import ConfigError
from bench import plugins
from bench.errors import BenchError
from bench.runner import run_cell
from bench.store import ResultStore, code_version


def _run(cell, device, progress, threads, worker=False):
    if worker and threading.current_thread() is threading.main_thread():
        # Ctrl-C reaches every process of the terminal's group: a worker leaves it to the sweep, which stops
        # the pool and keeps the cells that came back, instead of dying mid-cell (and leaking its semaphores)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # tqdm's default lock is a multiprocessing semaphore, leaked (with a warning) when the pool is stopped
        tqdm.set_lock(threading.RLock())
    try:
        return cell.key(), run_cell(cell, device=device, progress=progress, threads=threads)
    except ConfigError as e:  # a constraint only the algorithm's construction can check
        raise BenchError(f"{cell.suite} [fidelity.{cell.fidelity}] {cell.algorithm}/{cell.target}: {e}") from None


def _run_in_worker(specs, blob, device, progress, threads):
    """A worker's cell: register the suite file's plug-ins (their folders on the path, as in the parent) before
    the cell, whose config may be a plug-in's dataclass, is unpickled."""
    plugins.load_entry_points()
    plugins.register_specs(specs)
    return _run(pickle.loads(blob), device, progress, threads, True)


def _stop_local_workers() -> None:
    """Shut joblib's process pool down now (on Ctrl-C or an error), so that no worker outlives the sweep and
    the pool's semaphores are released."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True, kill_workers=True)


def connect(scheduler: str, timeout_s: float):
    """A client of the Dask scheduler at ``scheduler``; a one-line BenchError if it does not answer in time."""
    from distributed import Client

    try:
        return Client(scheduler, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as e:
        raise BenchError(f"--scheduler {scheduler}: no Dask scheduler answered within {timeout_s:g} s "
                         f"({type(e).__name__})") from None


def _flat(result):
    key, (rows, traces, art) = result
    return key, rows, traces, art


def _run_local(cells, specs, device, n_jobs: int, threads: int, keep) -> None:
    """Cells in ``n_jobs`` local processes (loky, joblib's process pool), each kept as it comes back. On
    Ctrl-C or an error every cell that has already finished is kept too (joblib's own generator drops the
    finished results it has not yet handed out), then the pool is shut down."""
    from joblib.externals.loky import get_reusable_executor

    pool = get_reusable_executor(max_workers=n_jobs)
    futures = [pool.submit(_run_in_worker, specs, pickle.dumps(c), device, False, threads) for c in cells]
    kept = set()
    try:
        for f in concurrent.futures.as_completed(futures):
            kept.add(f)
            keep(*_flat(f.result()))
    except BaseException:
        for f in futures:
            if f not in kept and f.done() and not f.cancelled() and f.exception() is None:
                keep(*_flat(f.result()))
        for f in futures:
            f.cancel()
        _stop_local_workers()
        raise


def parallelism(n_cells: int, device: str, jobs: int) -> tuple[int, int]:
    """(processes, torch threads per process) of a sweep of ``n_cells`` cells: ``jobs`` processes (0: one per
    core on the CPU, one on a GPU), never more than there are cells, and the cores shared among them."""
    cores = os.cpu_count() or 1
    n_jobs = jobs or (1 if device != "cpu" else min(cores, n_cells))
    n_jobs = max(1, min(n_jobs, n_cells))
    return n_jobs, max(1, cores // n_jobs)


def stamp(cells) -> None:
    """Give every cell the code version of this checkout (part of its id)."""
    version = code_version()
    for c in cells:
        c.code_version = version


def finished_as(cells, store: ResultStore, across_code: bool = False) -> dict[str, str]:
    """cell_id -> the id under which that cell is finished in ``store``: its own id (the same code version), or,
    with ``across_code``, the id it has under another code version of the folder's rows (everything else the
    same: config, target version, plug-in sources). Committed result rows of a paper run count as finished this
    way in a later session, on later code; the rows keep the code version that produced them."""
    done = store.finished()
    out = {c.cell_id(): c.cell_id() for c in cells if c.cell_id() in done}
    if across_code and done:
        versions = sorted(set(done.values()))
        for c in cells:
            if c.cell_id() not in out:
                hit = next((i for v in versions if (i := c.cell_id(v)) in done), None)
                if hit is not None:
                    out[c.cell_id()] = hit
    return out


def unfinished(cells, store: ResultStore, force: bool = False, across_code: bool = False, say: bool = False):
    """The cells still to run in ``store``: all with ``force``; else those not finished under this code version
    (or, with ``across_code``, under any code version of the folder). With ``say``, prints how many are skipped,
    and how many finished under other code versions run again (strict mode)."""
    if force:
        return list(cells)
    hits = finished_as(cells, store, across_code=True)
    same = {i: j for i, j in hits.items() if i == j}
    done = hits if across_code else same
    todo = [c for c in cells if c.cell_id() not in done]
    if say:
        other = len(hits) - len(same)
        if len(todo) < len(cells):
            extra = f", {other} of them under other code versions (--resume-across-code)" if across_code and other \
                else ""
            print(f"{len(cells) - len(todo)} of {len(cells)} cells already finished in {store.out}{extra}: skipped",
                  flush=True)
        if other and not across_code:
            print(f"{other} of {len(cells)} cells finished in {store.out} under other code versions run again "
                  "(--resume-across-code counts them as finished)", flush=True)
    return todo


def run_sweep(cells, out, device: str = "cpu", jobs: int = 0, force: bool = False, backend: str = "local",
              scheduler: str | None = None, connect_timeout_s: float = 10, across_code: bool = False) -> ResultStore:
    """Run the cells not yet finished in ``out`` (all of them with ``force``; with ``across_code``, a cell
    finished under another code version counts as finished: ``finished_as``); each finished cell is written
    to the store by this process as soon as it comes back, so a killed sweep, or a lost worker, loses no
    finished cell and a re-run resumes where it stopped.

    backend "local": cells in local processes through joblib (``jobs`` of them, default one per core);
    backend "dask": the same joblib calls on a Dask distributed cluster at ``scheduler`` (joblib's dask
    backend); Dask reschedules the cells of a worker that dies."""
    store = ResultStore(out)
    specs = plugins.used_specs(cells)
    stamp(cells)
    cells = unfinished(cells, store, force, across_code, say=True)
    if not cells:
        return store
    n_jobs, threads = parallelism(len(cells), device, jobs)
    with contextlib.ExitStack() as stack:
        # closed (ending its line) before any error or interruption message is printed
        bar = stack.enter_context(tqdm(total=len(cells), desc="cells", unit="cell"))
        if backend == "dask":
            stack.enter_context(connect(scheduler, connect_timeout_s))
            stack.enter_context(parallel_config(backend="dask"))
            n_jobs, threads = -1, 1
        # once the cells can run (a Dask scheduler answered): the plug-ins they use and where they run
        store.record_plugins(specs)
        store.record_environment(device)

        def keep(key, rows, traces, art):
            store.add(rows, traces, art, key)
            status = rows[0]["status"] if rows else "?"
            bar.set_postfix_str(f"{key['algorithm']}/{key['target']}/s{key['seed']}: {status}")
            bar.update()

        if n_jobs == 1:
            for c in cells:
                keep(*_flat(_run(c, device, True, threads)))
        elif backend == "local":
            _run_local(cells, specs, device, n_jobs, threads, keep)
        else:
            for out in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                    delayed(_run_in_worker)(specs, pickle.dumps(c), device, False, threads) for c in cells):
                keep(*_flat(out))
    return store
