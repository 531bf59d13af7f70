"""Run one cell (train an EBM with one algorithm on one target and seed) and evaluate it.

The training loop is the same for every algorithm: draw a batch of positives from the fixed training
set, call ``algorithm.step``. Trace points (mode weights over training) are taken every ``eval_every``
iterations. Evaluation after training (``bench.evaluation``) computes every registered metric the target's
ground truth allows (metrics/catalogue.py), the audit of the mode weights included.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import torch
from tqdm.auto import tqdm

import algorithms
import datasets
from algorithms.base import Diverged, Problem
from algorithms.energies import make_energy
from algorithms.work import Work
from bench.evaluation import Probe, evaluate, rhat_point, trace_point
from bench.store import config_json
from bench.suite import Cell
from datasets.images import use_data_dir


def measuring(dev: torch.device):
    """A context in which measurements may draw random numbers without moving the training's random stream,
    so that how often (and whether) a run is measured never changes the run itself."""
    return torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [])


class TimeLimit(RuntimeError):
    """The cell ran past its time limit."""


class Abandoned(RuntimeError):
    """The sweep no longer wants this cell (it was stopped): not an outcome, nothing is recorded."""


class NoClock:
    """The runner's phase clock when nothing is timed (``bench.planner.PhaseClock`` times the phases of a run cut
    short): ``mark(phase)`` ends a phase, ``follow(work, alg)`` gives it the run's work counts and algorithm,
    ``enough()`` ends training early."""

    def mark(self, phase: str) -> None:
        pass

    def follow(self, work: Work, alg) -> None:
        pass

    def enough(self) -> bool:
        return False


#: a loss this large means the energy has exploded even if it is still finite
EXPLODED = 1e12

#: an energy whose spread over the held-out test set (``energy_spread``: max U - min U, nats) exceeds this at a
#: trace point or after training has run away: the run is recorded as ``runaway`` (training and evaluation go on,
#: the metrics are kept, tables count the run as a failure). See docs/choices.md, "Runaway energies".
RUNAWAY_SPREAD = 1e4
#: the statuses of a run trained to the end and evaluated (a runaway run keeps its metrics)
EVALUATED = ("ok", "runaway")
#: the metric the runaway check reads (metrics/catalogue.py)
ENERGY_SPREAD = "energy_spread"


def runaway_check(spread, it: int) -> tuple[int, float] | None:
    """(iteration, spread) when the energy spread says the energy has run away; None when it has not or was not
    measured. A non-finite energy on held-out data is divergence, not a runaway."""
    if spread is None:
        return None
    if not math.isfinite(spread):
        raise Diverged(it, f"non-finite energy on held-out data ({ENERGY_SPREAD} {spread})")
    return (it, spread) if spread > RUNAWAY_SPREAD else None


#: below this many points per sampler call a CPU step is dispatch-bound and a second thread gains nothing
#: (toy MLP ULA-EBM iteration, 2 cores, load ~2.5: 64 chains 3.8 ms with 1 or 2 threads; 256 chains 7.1 ms
#: on 1, 5.8 ms on 2; 1024 chains 20.1 vs 12.6 ms). On a loaded machine a second thread is far worse.
SMALL_BATCH = 256


def cell_threads(cell: Cell, threads: int | None) -> int | None:
    """The threads a cell runs with on the CPU: ``threads`` (the sweep's share of the cores), but one for a
    cell whose sampler calls are small: the training batch (or Jarzynski's walkers), times the i-SIR pool where
    there is one, below ``SMALL_BATCH``. Threads change speed only, never results."""
    if not threads or threads <= 1:
        return threads
    n = max(cell.train.batch_size, getattr(cell.algo, "n_walkers", 0) or 0)
    n *= max(1, getattr(cell.algo, "n_particles", 1) or 1)
    return 1 if n < SMALL_BATCH else threads


def run_cell(cell: Cell, device: str = "cpu", progress: bool = False, threads: int | None = None, clock=None,
             stop=None):
    """Train and evaluate one cell. Returns (rows, traces, artifacts) ready for the ResultStore.

    Divergence (non-finite or exploding loss, energies or chains) and running past ``time_limit_s`` are
    outcomes, recorded with the iteration and the reason; the sweep goes on. With ``grad_budget`` the
    training stops once that many energy-gradient evaluations are spent (runs at equal work). ``clock``
    (``bench.planner``) times the phases: setup, training steps, trace and R-hat points, evaluation, audit.
    ``stop``: a function asked before each iteration and before the evaluation; once it answers true the cell
    raises ``Abandoned`` (a cell whose process cannot be killed, a Dask task, is stopped this way)."""
    clock = clock or NoClock()
    cpu0 = time.process_time()  # the cell's CPU time, setup included (every thread of this process)
    dev = torch.device(device)
    if dev.type == "cpu":
        threads = cell_threads(cell, threads)
    if threads:
        torch.set_num_threads(threads)
    cfg = cell.train
    use_data_dir(cell.resources.get("data_dir"))  # this process reads the cell's image files from there
    target = datasets.get_target(cell.target)
    gen = torch.Generator().manual_seed(cell.seed)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    data = target.sample(cfg.n_data, gen).to(device=dev, dtype=dtype)
    torch.manual_seed(cell.seed)  # initial parameters and chains are shared by all algorithms of a seed
    energy = make_energy(cfg.energy, target.dim, target.shape, cfg.temperature).to(device=dev, dtype=dtype)
    probe = Probe(target, energy, cfg, dev, cell.resources.get("inception_weights"))
    if target.has("classifier"):
        target.classifier()  # an image target's classifier is trained (or read from its cache) before the clock
    work = Work()
    alg = algorithms.ALGORITHMS[cell.base](Problem(target, data, dev, work), energy, cell.algo)
    clock.follow(work, alg)
    n_iters = cfg.iterations()
    sched = None
    if cfg.lr_final_ratio < 1 and isinstance(getattr(alg, "optimizer", None), torch.optim.Optimizer):
        r = cfg.lr_final_ratio  # linear decay of every learning rate to r times its value (003 B.2)
        sched = torch.optim.lr_scheduler.LambdaLR(alg.optimizer, lambda k: 1 - (1 - r) * min(k, n_iters) / n_iters)
    traces, status, reason, metrics, art = [], "ok", "", {}, {}
    runaway = None  # (iteration, energy spread) of the first trace point past RUNAWAY_SPREAD
    clock.mark("setup")
    t0 = time.perf_counter()
    it = 0
    try:
        bar = tqdm(range(1, n_iters + 1), desc=f"{cell.algorithm}/{cell.target}/s{cell.seed}",
                   disable=not progress, leave=False, mininterval=1.0)
        perm, pos = torch.randperm(cfg.n_data, device=dev), 0
        for it in bar:
            if stop is not None and stop():
                raise Abandoned(f"{cell.algorithm}/{cell.target}/s{cell.seed} at iteration {it}")
            if pos + cfg.batch_size > cfg.n_data:
                perm, pos = torch.randperm(cfg.n_data, device=dev), 0
            logs = alg.step(data[perm[pos:pos + cfg.batch_size]])
            if sched is not None:
                sched.step()
            pos += cfg.batch_size
            clock.mark("step")
            loss = logs.get("loss", 0.0)
            if not math.isfinite(loss) or abs(loss) > EXPLODED:
                raise Diverged(it, f"loss {loss:.3g}")
            last = it == n_iters or (cfg.grad_budget and work.grad_evals >= cfg.grad_budget) or clock.enough()
            if cfg.eval_every and (it % cfg.eval_every == 0 or last):
                with measuring(dev):  # trace-time measurements leave the training's random stream as it was
                    point = {**logs, **trace_point(probe, alg)}
                    clock.mark("trace")
                    point.update(rhat_point(probe, alg, it, last))
                    clock.mark("rhat")
                traces += [{**cell.key(), "iteration": it, "grad_evals": work.grad_evals, "metric": k, "value": v}
                           for k, v in point.items()]
                runaway = runaway or runaway_check(point.get(ENERGY_SPREAD), it)
                bar.set_postfix(loss=f"{loss:.3g}")
            if cfg.time_limit_s and time.perf_counter() - t0 > cfg.time_limit_s:
                raise TimeLimit(f"past the time limit of {cfg.time_limit_s:g} s at iteration {it}")
            if last:
                break
        train_time = time.perf_counter() - t0
        train_work = work.as_dict()
        if stop is not None and stop():
            raise Abandoned(f"{cell.algorithm}/{cell.target}/s{cell.seed} before its evaluation")
        metrics, art = evaluate(probe, alg)
        clock.mark("evaluate")
        runaway = runaway or runaway_check(metrics.get(ENERGY_SPREAD), it)
        if runaway:
            status = "runaway"
            reason = f"step {runaway[0]}: {ENERGY_SPREAD} {runaway[1]:.3g} nats > {RUNAWAY_SPREAD:g}"
            metrics["runaway_at"] = float(runaway[0])
    except Diverged as e:
        status, reason = "diverged", f"step {e.step if e.step >= 0 else it}: {e.reason}"
        train_time, train_work = time.perf_counter() - t0, work.as_dict()
        metrics = {"diverged_at": float(e.step if e.step >= 0 else it)}
    except TimeLimit as e:
        status, reason = "timeout", str(e)
        train_time, train_work = time.perf_counter() - t0, work.as_dict()
        metrics = {"timeout_at": float(it)}
    wall = time.perf_counter() - t0
    common = {
        **cell.key(),
        "cell_id": cell.cell_id(),
        "target_version": target.version,
        "settings": cell.settings,
        "deviations": json.dumps(cell.deviations) if cell.deviations else "",
        "status": status,
        "reason": reason,
        "n_iters": it,
        "train_time_s": round(train_time, 3),
        "wall_time_s": round(wall, 3),
        "cpu_time_s": round(time.process_time() - cpu0, 3),
        "time_per_iter_s": train_time / max(it, 1),
        **train_work,
        "device": str(dev),
        "code_version": cell.code_version,
        "torch_version": torch.__version__,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config_json(cell.config()),
    }
    # an FID / KID / IS value carries its protocol (extractor, counts, split, quantisation): tables never compare two
    # values measured under different protocols (bench/tables.py, ``by_protocol``)
    rows = [{**common, "metric": k, "value": v,
             "protocol": json.dumps(probe.protocols[k], sort_keys=True) if k in probe.protocols else ""}
            for k, v in metrics.items()]
    return rows, traces, art
