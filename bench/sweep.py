"""Run the cells of a sweep, serially, in local processes (loky, joblib's process pool) or on a Dask cluster,
storing each as it finishes. A stop signal (``bench.stopping``) abandons the cells in flight at once: local
workers are killed, Dask tasks stop at their next iteration, so no process of the sweep outlives it and a Dask
cluster's workers are free again within seconds."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import pickle
import signal
import threading
import time

from tqdm.auto import tqdm

from algorithms.base import ConfigError
from bench import plugins
from bench.checkpoint import DEFAULT_EVERY_MIN, checkpoint_for
from bench.errors import BenchError, Interrupted
from bench.progress import DaskInFlight, InFlight
from bench.runner import may_stack, run_cell, run_stack, stack_key, unit_name
from bench.stopping import STOP_SIGNALS, signals_blocked, stop_on_signals
from bench.store import KEY, ResultStore, code_version

#: seconds to wait for a finished Dask cell's result while a stopped sweep keeps what came back
DASK_FETCH_TIMEOUT_S = 30
#: seconds between two looks for finished cells and stop signals while cells run in other processes
POLL_S = 0.2


def _run(cells, device, progress, threads, worker=False, stop=None, checkpoint=None, report=None):
    """Run a unit of the sweep: one cell, or the seeds of one cell trained together (``run_stack``); returns
    [(cell key, (rows, traces, artifacts))], one per cell. ``checkpoint``: the unit's (``bench.checkpoint``);
    ``report``: where a worker's unit reports its iterations (``bench.progress``)."""
    if worker and threading.current_thread() is threading.main_thread():
        # a local worker leaves stop signals (Ctrl-C reaches every process of the terminal's group) to the sweep,
        # which keeps the cells that came back and kills its workers, instead of dying mid-cell with a traceback
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        _exit_with_parent()
        # tqdm's default lock is a multiprocessing semaphore, leaked (with a warning) when the pool is stopped
        tqdm.set_lock(threading.RLock())
    cell = cells[0]
    try:
        if len(cells) > 1:
            return run_stack(cells, device=device, progress=progress, threads=threads, stop=stop,
                             checkpoint=checkpoint, report=report)
        return [(cell.key(), run_cell(cell, device=device, progress=progress, threads=threads, stop=stop,
                                      checkpoint=checkpoint, report=report))]
    except ConfigError as e:  # a constraint only the algorithm's construction can check
        raise BenchError(f"{cell.suite} [fidelity.{cell.fidelity}] {cell.algorithm}/{cell.target}: {e}") from None


@functools.cache  # once per process
def _exit_with_parent() -> None:
    """A local worker ends itself within a second of its sweep's process dying without stopping it (SIGKILL, the
    out-of-memory killer): as it ignores stop signals, nothing else would end its cell."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="bench-parent-watch").start()


def _released_by_dask():
    """For a cell running as a Dask task: a test that is true once its client no longer wants it (the sweep was
    stopped and cancelled it, or its process is gone). Dask cannot kill a running task, so the cell asks at each
    iteration and stops, which frees the worker for other work."""
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()

    def released() -> bool:
        ts = worker.state.tasks.get(key)  # the worker's record of this task: "cancelled" once released
        return ts is None or ts.state == "cancelled"

    return released


def _run_in_worker(specs, blob, device, progress, threads, dask=False, checkpoint=None, report=None):
    """A worker's cell: register the suite file's plug-ins (their folders on the path, as in the parent) before
    the cell, whose config may be a plug-in's dataclass, is unpickled."""
    plugins.load_entry_points()
    plugins.register_specs(specs)
    return _run(pickle.loads(blob), device, progress, threads, not dask, _released_by_dask() if dask else None,
                checkpoint, report)


def connect(scheduler: str, timeout_s: float):
    """A client of the Dask scheduler at ``scheduler``; a one-line BenchError if it does not answer in time."""
    from distributed import Client

    try:
        return Client(scheduler, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as e:
        raise BenchError(f"--scheduler {scheduler}: no Dask scheduler answered within {timeout_s:g} s "
                         f"({type(e).__name__})") from None


def _flat(results):
    return [(key, rows, traces, art) for key, (rows, traces, art) in results]


def units(cells, stack_seeds: bool = False) -> list[list]:
    """The sweep's units of work: one cell each, or with ``stack_seeds`` the cells that differ only by their seed
    together where they may train stacked (``bench.runner.may_stack``, ``run_stack``), in the order of their first
    cell; cells that do not stack stay units of their own (they run in parallel with ``-j N``)."""
    if not stack_seeds:
        return [[c] for c in cells]
    groups: dict[str, list] = {}
    for c in cells:
        groups.setdefault(stack_key(c) if may_stack(c) else c.cell_id(), []).append(c)
    return list(groups.values())


def _kill_pool(pool) -> None:
    """Kill the pool's workers now (SIGKILL, with whatever they started), cells in flight included, then shut the
    pool down (its manager thread sees them gone and ends). Not loky's shutdown alone: a graceful one waits for
    the cells in flight, and a ``kill_workers`` one kills from that manager thread, which a future cancelled
    beforehand stops with an ``InvalidStateError`` before it kills anything; so no future is cancelled."""
    from joblib.externals.loky.backend.utils import kill_process_tree

    for p in list(pool._processes.values()):  # loky's worker processes (no public accessor)
        with contextlib.suppress(OSError):
            kill_process_tree(p)
    pool.shutdown(wait=True, kill_workers=True)


def _run_local(cells, checkpoints, specs, device, n_jobs: int, threads: int, keep, stop, show=None) -> None:
    """Cells in ``n_jobs`` local processes (loky, joblib's process pool), each kept as it comes back. On a stop
    signal or an error every cell that has already finished is kept too, then the workers are killed. ``show``:
    called every few seconds with the line that says how far the units in flight are (``bench.progress``)."""
    from multiprocessing import resource_tracker

    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.backend import resource_tracker as loky_tracker

    # the resource trackers are started first: the standard library's unblocks SIGINT and SIGTERM in the thread
    # that starts it, which would undo the mask below for the workers started after it
    resource_tracker.ensure_running()
    loky_tracker.ensure_running()
    with InFlight([unit_name(c) for c in cells]) as inflight:  # the workers' progress files, removed on leaving
        with signals_blocked():  # the workers and the pool's threads inherit the mask: stop signals reach us alone
            pool = get_reusable_executor(max_workers=n_jobs)
            futures = [pool.submit(_run_in_worker, specs, pickle.dumps(c), device, False, threads, False, ck,
                                   inflight.reporter(i))
                       for i, (c, ck) in enumerate(zip(cells, checkpoints, strict=True))]
        kept, pending = set(), set(futures)
        try:
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
                for f in done:
                    kept.add(f)
                    keep(f.result())
                stop.check()
                if show is not None and inflight.due():
                    show(inflight.line([i for i, f in enumerate(futures) if f.running()]))
        except BaseException:
            for f in futures:
                if f not in kept and f.done() and not f.cancelled() and f.exception() is None:
                    kept.add(f)
                    keep(f.result())
            _kill_pool(pool)
            raise


def parallelism(n_cells: int, device: str, jobs: int) -> tuple[int, int]:
    """(processes, torch threads per process) of a sweep of ``n_cells`` cells: ``jobs`` processes (0: one per
    core on the CPU, one on a GPU), never more than there are cells, and the cores shared among them, at most
    ``OMP_NUM_THREADS`` each where the user set it (the runner sets torch's threads itself, so without this cap
    the variable would be ignored). On a busy machine a second thread per process is far slower than one: an
    MLP gradient on 256-16,384 points of the toy2d energy took 70-144 ms of CPU with 2 threads against 0.2-14 ms
    with 1, on 2 cores at load 4 (both cores busy with other work), so on a shared machine set
    OMP_NUM_THREADS=1."""
    cores = os.cpu_count() or 1
    n_jobs = jobs or (1 if device != "cpu" else min(cores, n_cells))
    n_jobs = max(1, min(n_jobs, n_cells))
    threads = max(1, cores // n_jobs)
    cap = thread_cap()
    return n_jobs, min(threads, cap) if cap else threads


def thread_cap() -> int | None:
    """The user's thread limit: OMP_NUM_THREADS when it is set to a positive integer, else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


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
        left = [c for c in cells if c.cell_id() not in out]
        if left:  # rows written before a setting was added: the same cell if the new setting is at its default
            out.update(_finished_before_new_settings(left, store, done))
    return out


def _finished_before_new_settings(cells, store: ResultStore, done: dict) -> dict:
    """cell_id -> the id of a finished row of the same cell written by code that lacked some of today's
    settings, all of which are at their defaults now (``Cell.config_as_of``)."""
    res = store.results()
    if "config" not in res.columns:
        return {}
    rows = res.drop_duplicates("cell_id")
    by_key = {}
    for r in rows.itertuples(index=False):
        key = tuple(str(getattr(r, k)) for k in KEY)
        by_key.setdefault(key, []).append((r.cell_id, r.config))
    found = {}
    for c in cells:
        key = tuple(str(v) for v in c.key().values())
        for cid, config in by_key.get(key, []):
            try:
                old_keys = json.loads(config).keys()
            except (TypeError, ValueError):
                continue
            as_of = c.config_as_of(old_keys)
            if as_of is not None and c.cell_id(done[cid], config=as_of) == cid:
                found[c.cell_id()] = cid
                break
    return found


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


def _run_dask(client, cells, specs, device, keep, stop, show=None) -> None:
    """Cells as tasks of the Dask cluster of ``client`` (one thread each), each kept as it comes back; Dask
    reschedules the cells of a worker that dies. On a stop signal or an error the cells that have finished are
    kept, and the others cancelled: a running one stops at its next iteration. ``show``: as for ``_run_local``
    (the units report through the scheduler's events, ``bench.progress.DaskInFlight``)."""
    from distributed import as_completed

    with DaskInFlight([unit_name(c) for c in cells], client) as inflight:
        futures = [client.submit(_run_in_worker, specs, pickle.dumps(c), device, False, 1, True, None,
                                 inflight.reporter(i), pure=False)
                   for i, c in enumerate(cells)]
        kept, ready = set(), as_completed(futures)
        try:
            while not ready.is_empty():
                for f in ready.next_batch(block=False):
                    kept.add(f)
                    keep(f.result())
                stop.check()
                if show is not None and inflight.due():  # a unit not yet started has not reported: not shown
                    show(inflight.line([i for i, f in enumerate(futures) if f not in kept and not f.done()]))
                if not ready.has_ready():
                    time.sleep(POLL_S)
        except BaseException:
            try:
                for f in futures:
                    if f not in kept and f.status == "finished":
                        kept.add(f)
                        keep(f.result(timeout=DASK_FETCH_TIMEOUT_S))
            finally:
                client.cancel([f for f in futures if f not in kept])
            raise


def _close_quietly(bar) -> None:
    """Close the progress bar; a terminal that is gone (SIGHUP) cannot be written to, which is not an error."""
    with contextlib.suppress(OSError):
        bar.close()


def run_sweep(cells, out, device: str = "cpu", jobs: int = 0, force: bool = False, backend: str = "local",
              scheduler: str | None = None, connect_timeout_s: float = 10, across_code: bool = False,
              stack_seeds: bool = False, checkpoint_every_s: float = DEFAULT_EVERY_MIN * 60) -> ResultStore:
    """Run the cells not yet finished in ``out`` (all of them with ``force``; with ``across_code``, a cell
    finished under another code version counts as finished: ``finished_as``); each finished cell is written
    to the store by this process as soon as it comes back, so a killed sweep, or a lost worker, loses no
    finished cell and a re-run resumes where it stopped.

    backend "local": cells in local processes (``jobs`` of them, default one per core; with one, in this
    process); backend "dask": cells as tasks of the Dask distributed cluster at ``scheduler``; Dask reschedules
    the cells of a worker that dies. SIGINT, SIGTERM and SIGHUP (in the main thread) stop the sweep: cells in
    flight are abandoned and ``Interrupted`` says how many cells are saved.

    ``stack_seeds``: the unfinished seeds of each cell train together as one stacked model in one process
    (``bench.runner.run_stack``; algorithms that do not stack run one seed at a time); each seed is stored as its
    own cell, with the same results as its run alone up to floating-point rounding.

    ``checkpoint_every_s`` (0: none): with the local backend, each unit in training saves its state every so many
    seconds in ``out/checkpoints`` (``bench.checkpoint``), so a stopped sweep loses at most that much of each unit
    in flight: the same command resumes it there, with the numbers of an uninterrupted run. A unit's checkpoint is
    removed once its rows are stored; ``force`` starts every unit afresh."""
    store = ResultStore(out)
    specs = plugins.used_specs(cells)
    stamp(cells)
    todo = unfinished(cells, store, force, across_code, say=True)
    if not todo:
        return store
    work = units(todo, stack_seeds)
    checkpoints = [checkpoint_for(out, u, checkpoint_every_s) if checkpoint_every_s and backend == "local" else None
                   for u in work]
    if force:
        for ck in filter(None, checkpoints):
            ck.remove()
    unit_of = {json.dumps(c.key(), sort_keys=True): i for i, u in enumerate(work) for c in u}
    n_jobs, threads = parallelism(len(work), device, jobs)
    with stop_on_signals() as stop:
        try:
            # a signal is acted on where the sweep checks for it, except inside a cell computing in this process
            with stop.mode(interrupting=False), contextlib.ExitStack() as stack:
                # closed (ending its line) before any error or interruption message is printed
                bar = tqdm(total=len(todo), desc="cells", unit="cell")
                stack.callback(_close_quietly, bar)
                client = stack.enter_context(connect(scheduler, connect_timeout_s)) if backend == "dask" else None
                # once the cells can run (a Dask scheduler answered): the plug-ins they use and where they run
                store.record_plugins(specs)
                store.record_environment(device)

                def keep(results):
                    for key, rows, traces, art in _flat(results):
                        store.add(rows, traces, art, key)
                        status = rows[0]["status"] if rows else "?"
                        bar.set_postfix_str(f"{key['algorithm']}/{key['target']}/s{key['seed']}: {status}")
                        bar.update()
                    for key, *_ in _flat(results[:1]):  # the unit's rows are stored: its checkpoint is done
                        ck = checkpoints[unit_of[json.dumps(key, sort_keys=True)]]
                        if ck is not None:
                            ck.remove()

                def show(line):  # the units in flight, after the bar's count
                    if line:
                        bar.set_postfix_str(line)

                if client is not None:
                    _run_dask(client, work, specs, device, keep, stop, show)
                elif n_jobs == 1:
                    for unit, ck in zip(work, checkpoints, strict=True):
                        with stop.mode(interrupting=True):
                            result = _run(unit, device, True, threads, checkpoint=ck)
                        keep(result)
                else:
                    _run_local(work, checkpoints, specs, device, n_jobs, threads, keep, stop, show)
        except Interrupted as e:
            saved, n = len(finished_as(cells, store, across_code)), len(cells)
            detail = (f"all {n} cells saved in {out}" if saved == n else f"{saved} of {n} cells saved in {out}; the "
                      f"other {n - saved} run on resume (the same command again); cells in flight were abandoned")
            held = sum(len(u) for u, ck in zip(work, checkpoints, strict=True) if ck is not None and ck.path.exists())
            if saved < n and held:
                detail += (f", {held} of them resume from their checkpoints (saved every "
                           f"{checkpoint_every_s / 60:g} min)")
            raise Interrupted(e.signum, detail) from None
    return store
