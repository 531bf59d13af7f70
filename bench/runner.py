"""Run one cell (train an EBM with one algorithm on one target and seed) and evaluate it.

The training loop is the same for every algorithm: draw a batch of positives from the fixed training
set, call ``algorithm.step``. Trace points (mode weights over training) are taken every ``eval_every``
iterations; a run that diverges also gets the step scalars of its last iterations (``RecentSteps``), so that its
traces show its course up to the divergence even when it diverges before the first trace point. Evaluation after
training (``bench.evaluation``) computes every registered metric the target's ground truth allows
(metrics/catalogue.py), the audit of the mode weights included.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import UTC, datetime

import torch
from tqdm.auto import tqdm

import algorithms
import datasets
from algorithms.base import Diverged, Problem
from algorithms.energies import ENERGIES, MLPEnergy, make_energy
from algorithms.stacking import stack_of, stackable, stacks
from algorithms.work import Work
from bench.checkpoint import rng_state, set_rng_state
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


def _target_data(cell: Cell, dev: torch.device):
    """A cell's target and training set (drawn from a generator seeded with the cell's seed)."""
    cfg = cell.train
    use_data_dir(cell.resources.get("data_dir"))  # this process reads the cell's image files from there
    target = datasets.get_target(cell.target)
    gen = torch.Generator().manual_seed(cell.seed)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    return target, target.sample(cfg.n_data, gen).to(device=dev, dtype=dtype)


def _setup(cell: Cell, dev: torch.device, target=None, data=None, saved: dict | None = None):
    """A cell's target, training data, probe, work counter and algorithm, built from the seed's random stream (the
    global one, seeded here): the same for a run alone and for a seed trained together with others. ``target``,
    ``data``: built already (``_target_data``); ``saved``: a checkpoint's state (``bench.checkpoint``), whose
    energy, work counter and algorithm are taken instead of new ones."""
    cfg = cell.train
    if target is None:
        target, data = _target_data(cell, dev)
    if saved is None:
        torch.manual_seed(cell.seed)  # initial parameters and chains are shared by all algorithms of a seed
        energy = make_energy(cfg.energy, target.dim, target.shape, cfg.temperature).to(device=dev, dtype=data.dtype)
    else:
        energy = saved["energy"]
    probe = Probe(target, energy, cfg, dev, cell.resources.get("inception_weights"))
    if target.has("classifier"):
        target.classifier()  # an image target's classifier is trained (or read from its cache) before the clock
    if saved is not None:
        return target, data, probe, saved["work"], saved["alg"]
    work = Work()
    alg = algorithms.ALGORITHMS[cell.base](Problem(target, data, dev, work), energy, cell.algo)
    return target, data, probe, work, alg


def _trace(cell: Cell, probe, alg, logs: dict, it: int, last: bool, work: Work, dev, clock, stream=None):
    """The trace rows of iteration ``it`` and the energy spread measured there. The measurements draw from the
    training's random stream and leave it as it was (``measuring``); ``stream``: the seed's own (``_use_stream``)."""
    with measuring(dev):  # trace-time measurements leave the training's random stream as it was
        if stream is not None:
            _use_stream(dev, *stream)
        point = {**logs, **trace_point(probe, alg)}
        clock.mark("trace")
        point.update(rhat_point(probe, alg, it, last))
        clock.mark("rhat")
    rows = [{**cell.key(), "iteration": it, "grad_evals": work.grad_evals, "metric": k, "value": v}
            for k, v in point.items()]
    return rows, point.get(ENERGY_SPREAD)


class RecentSteps:
    """The scalars ``algorithm.step`` logged (loss, energies, acceptance, step size) over a run's last iterations,
    written to its traces only if it diverges: the regular trace points come every ``eval_every`` iterations, and
    a run that diverges early (000's NT-EBM at d = 32 and 64 diverges at iterations 620-830, its trace points are
    every 1,000) would otherwise leave no trace of its course at all.

    Kept: every ``stride`` = ``eval_every // KEEP``-th iteration (every one if that is 0), up to the last ``KEEP``
    of them, skipping the iterations that are regular trace points (their rows hold these scalars already), and the
    last iteration whose step returned. At a divergence ``rows`` gives them, and the diverging iteration's own
    scalars when its step returned them (a loss past the threshold, checked before that iteration's trace point;
    a step that raised returns none). Bounded memory; carried in checkpoints, so a resumed run writes what an
    uninterrupted one does."""

    KEEP = 10

    def __init__(self, eval_every: int):
        self.eval_every = eval_every
        self.stride = max(1, eval_every // self.KEEP)
        self.points: list[tuple[int, int, dict]] = []  # (iteration, grad_evals, logs), oldest first
        self.last: tuple[int, int, dict] | None = None

    def _traced(self, it: int) -> bool:
        return bool(self.eval_every) and it % self.eval_every == 0

    def note(self, it: int, grad_evals: int, logs: dict) -> None:
        """Iteration ``it``'s step returned ``logs`` (called before it is checked for divergence)."""
        self.last = (it, grad_evals, dict(logs))
        if it % self.stride == 0 and not self._traced(it):
            self.points.append(self.last)
            del self.points[:-self.KEEP]

    def rows(self, key: dict, diverged_at: int) -> list[dict]:
        """The trace rows of the kept iterations (``key``: the cell's) of a run that diverged at iteration
        ``diverged_at``, oldest first."""
        pts = list(self.points)
        last = self.last
        if last is not None and (last[0] == diverged_at or not self._traced(last[0])) \
                and (not pts or pts[-1][0] != last[0]):
            pts.append(last)
        return [{**key, "iteration": it, "grad_evals": g, "metric": k, "value": float(v)}
                for it, g, logs in pts for k, v in logs.items() if isinstance(v, int | float)]


def _evaluate(probe, alg, runaway, it: int, clock):
    """Evaluation after training: (status, reason, metrics, artifacts); raises ``Diverged`` as training does."""
    metrics, art = evaluate(probe, alg)
    clock.mark("evaluate")
    runaway = runaway or runaway_check(metrics.get(ENERGY_SPREAD), it)
    status, reason = "ok", ""
    if runaway:
        status = "runaway"
        reason = f"step {runaway[0]}: {ENERGY_SPREAD} {runaway[1]:.3g} nats > {RUNAWAY_SPREAD:g}"
        metrics["runaway_at"] = float(runaway[0])
    return status, reason, metrics, art


def _diverged(e: Diverged, it: int) -> tuple[str, str, dict]:
    step = e.step if e.step >= 0 else it
    return "diverged", f"step {step}: {e.reason}", {"diverged_at": float(step)}


def _rows(cell: Cell, target, probe, dev, status, reason, it, train_time, wall, cpu, train_work, metrics,
          extra=None) -> list[dict]:
    """The result rows of a run: one per metric, with the run's outcome, cost and settings."""
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
        "cpu_time_s": round(cpu, 3),
        "time_per_iter_s": train_time / max(it, 1),
        **train_work,
        "device": str(dev),
        "code_version": cell.code_version,
        "torch_version": torch.__version__,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config_json(cell.config()),
        **(extra or {}),
    }
    # an FID / KID / IS value carries its protocol (extractor, counts, split, quantisation): tables never compare two
    # values measured under different protocols (bench/tables.py, ``by_protocol``)
    return [{**common, "metric": k, "value": v,
             "protocol": json.dumps(probe.protocols[k], sort_keys=True) if k in probe.protocols else ""}
            for k, v in metrics.items()]


def unit_name(cells: list[Cell]) -> str:
    """A unit of training's name on bars and messages: algorithm/target/s<seed>, or s<seed,seed,...> for seeds
    trained together."""
    return f"{cells[0].algorithm}/{cells[0].target}/s{','.join(str(c.seed) for c in cells)}"


def run_cell(cell: Cell, device: str = "cpu", progress: bool = False, threads: int | None = None, clock=None,
             stop=None, checkpoint=None, report=None):
    """Train and evaluate one cell. Returns (rows, traces, artifacts) ready for the ResultStore.

    Divergence (non-finite or exploding loss, energies or chains) and running past ``time_limit_s`` are
    outcomes, recorded with the iteration and the reason; the sweep goes on. With ``grad_budget`` the
    training stops once that many energy-gradient evaluations are spent (runs at equal work). ``clock``
    (``bench.planner``) times the phases: setup, training steps, trace and R-hat points, evaluation, audit.
    ``stop``: a function asked before each iteration and before the evaluation; once it answers true the cell
    raises ``Abandoned`` (a cell whose process cannot be killed, a Dask task, is stopped this way).
    ``checkpoint`` (``bench.checkpoint.Checkpoint``): the training resumes from it if it holds this cell's state,
    and saves its state there every ``checkpoint.every_s`` seconds; a resumed run gives the numbers of an
    uninterrupted one, and its rows say where it resumed (``resumed_at``). ``report``: called as ``report(it,
    n_iters)`` after each training iteration (a worker's ``bench.progress.ProgressFile``)."""
    clock = clock or NoClock()
    cpu0 = time.process_time()  # the cell's CPU time, setup included (every thread of this process)
    dev = torch.device(device)
    if dev.type == "cpu":
        threads = cell_threads(cell, threads)
    if threads:
        torch.set_num_threads(threads)
    cfg = cell.train
    target, data = _target_data(cell, dev)
    saved = checkpoint.load({"target": target, "data": data}, dev) if checkpoint is not None else None
    target, data, probe, work, alg = _setup(cell, dev, target, data, saved)
    clock.follow(work, alg)
    n_iters = cfg.iterations()
    sched = None
    if cfg.lr_final_ratio < 1 and isinstance(getattr(alg, "optimizer", None), torch.optim.Optimizer):
        r = cfg.lr_final_ratio  # linear decay of every learning rate to r times its value (003 B.2)
        lrs = [g["lr"] for g in alg.optimizer.param_groups]  # a resumed optimiser's: LambdaLR resets them
        sched = torch.optim.lr_scheduler.LambdaLR(alg.optimizer, lambda k: 1 - (1 - r) * min(k, n_iters) / n_iters)
        if saved is not None:
            sched.load_state_dict(saved["sched"])
            for g, lr in zip(alg.optimizer.param_groups, lrs, strict=True):
                g["lr"] = lr
    traces, status, reason, metrics, art = [], "ok", "", {}, {}
    runaway = None  # (iteration, energy spread) of the first trace point past RUNAWAY_SPREAD
    recent = RecentSteps(cfg.eval_every)
    name = unit_name([cell])
    it0, resumed_at = 0, []
    if saved is None:
        perm, pos = torch.randperm(cfg.n_data, device=dev), 0
    else:
        it0, perm, pos, traces, runaway = saved["it"], saved["perm"], saved["pos"], saved["traces"], saved["runaway"]
        recent = saved.get("recent") or recent  # checkpoints written before RecentSteps lack it
        resumed_at = _resume(name, saved, dev)
        cpu0 -= saved["cpu_time"]
    clock.mark("setup")
    t0 = time.perf_counter() - (saved["train_time"] if saved else 0.0)
    it = it0
    if checkpoint is not None:
        checkpoint.start()
    try:
        bar = tqdm(range(it0 + 1, n_iters + 1), desc=name, disable=not progress, leave=False, mininterval=1.0,
                   initial=it0, total=n_iters)
        for it in bar:
            if stop is not None and stop():
                raise Abandoned(f"{name} at iteration {it}")
            if pos + cfg.batch_size > cfg.n_data:
                perm, pos = torch.randperm(cfg.n_data, device=dev), 0
            logs = alg.step(data[perm[pos:pos + cfg.batch_size]])
            if sched is not None:
                sched.step()
            pos += cfg.batch_size
            clock.mark("step")
            if report is not None:
                report(it, n_iters)
            recent.note(it, work.grad_evals, logs)
            loss = logs.get("loss", 0.0)
            if not math.isfinite(loss) or abs(loss) > EXPLODED:
                raise Diverged(it, f"loss {loss:.3g}")
            last = it == n_iters or (cfg.grad_budget and work.grad_evals >= cfg.grad_budget) or clock.enough()
            if cfg.eval_every and (it % cfg.eval_every == 0 or last):
                rows, spread = _trace(cell, probe, alg, logs, it, last, work, dev, clock)
                traces += rows
                runaway = runaway or runaway_check(spread, it)
                bar.set_postfix(loss=f"{loss:.3g}")
            if cfg.time_limit_s and time.perf_counter() - t0 > cfg.time_limit_s:
                raise TimeLimit(f"past the time limit of {cfg.time_limit_s:g} s at iteration {it}")
            if last:
                break
            if checkpoint is not None and checkpoint.due():
                checkpoint.save({"it": it, "energy": probe.energy, "work": work, "alg": alg, "perm": perm,
                                 "pos": pos, "traces": traces, "runaway": runaway, "recent": recent,
                                 "sched": sched.state_dict() if sched is not None else None,
                                 **_loop_state(dev, resumed_at, t0, cpu0)},
                                {"target": target, "data": data})
        train_time = time.perf_counter() - t0
        train_work = work.as_dict()
        if stop is not None and stop():
            raise Abandoned(f"{name} before its evaluation")
        status, reason, metrics, art = _evaluate(probe, alg, runaway, it, clock)
    except Diverged as e:
        status, reason, metrics = _diverged(e, it)
        train_time, train_work = time.perf_counter() - t0, work.as_dict()
        traces += recent.rows(cell.key(), it)
    except TimeLimit as e:
        status, reason = "timeout", str(e)
        train_time, train_work = time.perf_counter() - t0, work.as_dict()
        metrics = {"timeout_at": float(it)}
    wall = time.perf_counter() - t0
    rows = _rows(cell, target, probe, dev, status, reason, it, train_time, wall, time.process_time() - cpu0,
                 train_work, metrics, _resumed_column(resumed_at))
    return rows, traces, art


def _loop_state(dev: torch.device, resumed_at: list[int], t0: float, cpu0: float) -> dict:
    """What a checkpoint of ``run_cell`` or ``run_stack`` holds besides the models and batches: torch's global
    random streams, the earlier resumes, and the training time and CPU time spent since ``t0`` / ``cpu0``."""
    return {"rng": rng_state(dev), "resumed_at": resumed_at, "train_time": time.perf_counter() - t0,
            "cpu_time": time.process_time() - cpu0}


def _resume(name: str, saved: dict, dev: torch.device) -> list[int]:
    """Resume from ``saved`` (its ``_loop_state`` part): torch's global streams as they were, a line on stderr;
    returns the iterations resumed at, this one included. The caller shifts its clocks by the time spent."""
    set_rng_state(saved["rng"], dev)
    print(f"{name}: resumed from its checkpoint at iteration {saved['it']} (saved {saved['saved_at']})",
          file=sys.stderr)
    return saved["resumed_at"] + [saved["it"]]


def _resumed_column(resumed_at: list[int]) -> dict:
    """The ``resumed_at`` column of a run resumed from checkpoints: the iterations it resumed at; none otherwise."""
    return {"resumed_at": " ".join(str(i) for i in resumed_at)} if resumed_at else {}


# --- seeds trained together ---------------------------------------------------------------------------------------

def stack_key(cell: Cell) -> str:
    """Cells with the same key differ only by their seed: they may train as one stack (``run_stack``)."""
    key = {k: v for k, v in cell.key().items() if k != "seed"}
    return json.dumps([key, cell.base, cell.config(), cell.resources], sort_keys=True, default=str)


def may_stack(cell: Cell) -> bool:
    """Whether the seeds of ``cell`` may train stacked, as far as its settings say before anything is built (the
    algorithm class stacks, the energy is an MLP, no image augmentation, no learning-rate decay); ``run_stack``
    checks the built algorithm once more."""
    energy = ENERGIES.get(cell.train.energy)
    return (stacks(algorithms.ALGORITHMS.get(cell.base), cell.algo) and isinstance(energy, type)
            and issubclass(energy, MLPEnergy)
            and getattr(cell.algo, "augment", "none") == "none" and cell.train.lr_final_ratio >= 1)


def _global_state(dev: torch.device) -> torch.Tensor:
    return torch.get_rng_state() if dev.type == "cpu" else torch.cuda.get_rng_state(dev)


def _use_stream(dev: torch.device, gen: torch.Generator, cpu_gen: torch.Generator) -> None:
    """Make torch's global random stream(s) a stacked seed's: on the CPU its generator's state; on a GPU the GPU
    stream's from its generator and the CPU stream's from its CPU generator (which only Jarzynski's resampling
    draws from in training)."""
    if dev.type == "cpu":
        torch.set_rng_state(gen.get_state())
    else:
        torch.set_rng_state(cpu_gen.get_state())
        torch.cuda.set_rng_state(gen.get_state(), dev)


class _Seed:
    """A seed of a stack: its cell, what ``_setup`` built, its random stream and, once it has one, its outcome.
    ``built``: its target and training set (``_target_data``); ``saved``: its part of a stack's checkpoint."""

    #: what of a seed a stack's checkpoint holds (besides its energy, work counter, algorithm and ``recent``)
    SAVED = ("gen", "cpu_gen", "perm", "traces", "runaway", "result", "share")

    def __init__(self, cell: Cell, dev: torch.device, built=None, saved: dict | None = None):
        self.cell = cell
        self.target, self.data, self.probe, self.work, self.alg = _setup(cell, dev, *(built or (None, None)), saved)
        if saved is not None:
            for k in self.SAVED:
                setattr(self, k, saved[k])
            # checkpoints written before RecentSteps lack it: an empty one
            self.recent = saved.get("recent") or RecentSteps(cell.train.eval_every)
            return
        n_data = cell.train.n_data
        self.perm = torch.randperm(n_data, device=dev)  # the run alone draws its first batch order here
        # from here on the seed draws from its own generator, in the state the global stream has in its run alone
        self.gen = torch.Generator(device=dev)
        self.gen.set_state(_global_state(dev))
        self.cpu_gen = self.gen  # its CPU stream (on a GPU: the CPU stream as its setup left it)
        if dev.type != "cpu":
            self.cpu_gen = torch.Generator()
            self.cpu_gen.set_state(torch.get_rng_state())
        self.traces: list[dict] = []
        self.runaway = None
        self.result = None  # (status, reason, metrics, artifacts, iteration, train time, cpu time) once ended
        self.share = [0.0, 0.0]  # its share of the stack's training time and CPU time up to the last change of seeds
        self.recent = RecentSteps(cell.train.eval_every)  # its last steps' scalars, for its traces if it diverges

    def state(self) -> dict:
        """This seed's part of its stack's checkpoint."""
        return {"energy": self.probe.energy, "work": self.work, "alg": self.alg, "recent": self.recent,
                **{k: getattr(self, k) for k in self.SAVED}}


def run_stack(cells: list[Cell], device: str = "cpu", progress: bool = False, threads: int | None = None,
              stop=None, checkpoint=None, report=None) -> list[tuple[dict, tuple]]:
    """Train the seeds of one cell (``cells``: the same ``stack_key``, different seeds) as one stacked model in this
    process (algorithms/stacking.py), then evaluate each seed as a run of its own. Returns [(cell key, (rows,
    traces, artifacts))], one per seed in the order of ``cells``: for each seed the rows ``run_cell`` gives for it,
    up to floating-point rounding. Each seed draws from its own random stream, seeded and consumed as in its run
    alone (so a seed's result does not depend on which seeds share its stack, and resuming a sweep runs only the
    missing seeds); a seed that diverges leaves the stack with its own outcome and the others go on; the time limit
    applies to the stack. Cells that do not stack (``algorithms.stacking.stackable``; a learning-rate decay) run one
    by one with ``run_cell``.

    Cost columns: training is shared, so each seed's ``train_time_s`` and ``cpu_time_s`` count its share (each
    stretch of the stack's time divided among the seeds training in it, so that the seeds' costs add up to the
    stack's when seeds leave early) plus its own evaluation, and its rows carry ``stacked_seeds``, the size of its
    stack. ``checkpoint`` and ``report``: as for ``run_cell``, for the whole stack."""
    cells = list(cells)
    if len({stack_key(c) for c in cells}) != 1:
        raise ValueError("run_stack: the cells differ by more than their seed")
    cfg = cells[0].train
    if not may_stack(cells[0]):
        return [(c.key(), run_cell(c, device, progress, threads, stop=stop, report=report)) for c in cells]
    cpu0 = time.process_time()
    dev = torch.device(device)
    if dev.type == "cpu":
        threads = cell_threads(cells[0], threads)
    if threads:
        torch.set_num_threads(threads)
    built = [_target_data(c, dev) for c in cells]
    shared = {k: v for i, (target, data) in enumerate(built) for k, v in ((f"target{i}", target), (f"data{i}", data))}
    saved = checkpoint.load(shared, dev) if checkpoint is not None else None
    seeds = [_Seed(c, dev, built[i], saved["seeds"][i] if saved else None) for i, c in enumerate(cells)]
    if not all(stackable(s.alg) for s in seeds):
        return [(c.key(), run_cell(c, device, progress, threads, stop=stop, report=report)) for c in cells]
    n_stack, clock, n_iters, b = len(seeds), NoClock(), cfg.iterations(), cfg.batch_size
    name = unit_name(cells)
    if saved is None:
        stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds], [s.cpu_gen for s in seeds])
        setup_cpu, it0, pos, live, resumed_at = (time.process_time() - cpu0) / n_stack, 0, 0, list(seeds), []
        cpu_t0, t0 = time.process_time(), time.perf_counter()
        since = [0.0, 0.0]  # the stack's training and CPU time at the last change of its seeds
    else:
        stack, setup_cpu, it0, pos = saved["stack"], saved["setup_cpu"], saved["it"], saved["pos"]
        live, resumed_at = [seeds[i] for i in saved["live"]], _resume(name, saved, dev)
        cpu_t0, t0 = time.process_time() - saved["cpu_time"], time.perf_counter() - saved["train_time"]
        since = saved["since"]
    it = it0
    if checkpoint is not None:
        checkpoint.start()

    def elapsed() -> list[float]:
        return [time.perf_counter() - t0, time.process_time() - cpu_t0]

    def share(s, now) -> list[float]:
        """Seed s's share of the stack's time up to ``now``: its share up to the last change of the seeds plus the
        time since, divided among the seeds training now (``live``, s among them)."""
        return [s.share[k] + (now[k] - since[k]) / len(live) for k in (0, 1)]

    def end(s, status, reason, metrics, now, art=None):
        """Seed s's outcome; its costs are its share of the stack's time up to ``now`` (``elapsed()``)."""
        train, cpu = share(s, now)
        s.result = {"status": status, "reason": reason, "metrics": metrics, "art": art or {}, "it": it,
                    "train_time": train, "wall": train, "work": s.work.as_dict(), "cpu": setup_cpu + cpu}

    bar = tqdm(range(it0 + 1, n_iters + 1), desc=name, disable=not progress, leave=False, mininterval=1.0,
               initial=it0, total=n_iters)
    for it in bar:
        if stop is not None and stop():
            raise Abandoned(f"{name} at iteration {it}")
        if pos + b > cfg.n_data:
            for s in live:
                s.perm = torch.randperm(cfg.n_data, device=dev, generator=s.gen)
            pos = 0
        logs, finite = stack.step(torch.stack([s.data[s.perm[pos:pos + b]] for s in live]))
        pos += b
        if report is not None:
            report(it, n_iters)
        now = elapsed()
        last = it == n_iters or bool(cfg.grad_budget and live[0].work.grad_evals >= cfg.grad_budget)
        kept = []
        for i, s in enumerate(live):
            try:
                if not finite[i]:  # what the step raises in the seed's run alone
                    raise Diverged(it, stack.why(i))
                s.recent.note(it, s.work.grad_evals, logs[i])
                loss = logs[i].get("loss", 0.0)
                if not math.isfinite(loss) or abs(loss) > EXPLODED:
                    raise Diverged(it, f"loss {loss:.3g}")
                if cfg.eval_every and (it % cfg.eval_every == 0 or last):
                    rows, spread = _trace(s.cell, s.probe, stack.member(i), logs[i], it, last, s.work, dev, clock,
                                          (s.gen, s.cpu_gen))
                    s.traces += rows
                    s.runaway = s.runaway or runaway_check(spread, it)
                kept.append(i)
            except Diverged as e:
                end(s, *_diverged(e, it), now)
                s.traces += s.recent.rows(s.cell.key(), it)
        if len(kept) < len(live):
            if progress:  # say so now: a seed's rows are stored only when the whole stack ends
                gone = ", ".join(f"seed {s.cell.seed} ({s.result['reason']})" for s in live if s.result)
                going = ", ".join(str(live[i].cell.seed) for i in kept) or "none"
                tqdm.write(f"{name}: diverged, left the stack: {gone}; seeds going on: {going}", file=sys.stderr)
            for s in live:
                s.share = share(s, now)
            since = now
            live = [live[i] for i in kept]
            if live:
                stack.drop(kept)
        if live and cfg.time_limit_s and time.perf_counter() - t0 > cfg.time_limit_s:
            now = elapsed()
            for s in live:
                end(s, "timeout", f"past the time limit of {cfg.time_limit_s:g} s at iteration {it}",
                    {"timeout_at": float(it)}, now)
            live = []
        if last or not live:
            break
        if checkpoint is not None and checkpoint.due():
            checkpoint.save({"it": it, "pos": pos, "stack": stack, "seeds": [s.state() for s in seeds],
                             "live": [seeds.index(s) for s in live], "setup_cpu": setup_cpu, "since": since,
                             **_loop_state(dev, resumed_at, t0, cpu_t0)}, shared)
    now = elapsed()
    for s in live:
        end(s, "ok", "", {}, now)
    for i, s in enumerate(live):
        if stop is not None and stop():
            raise Abandoned(f"{name} before the evaluation of seed {s.cell.seed}")
        alg = stack.member(i)
        e0, c0 = time.perf_counter(), time.process_time()
        _use_stream(dev, s.gen, s.cpu_gen)  # the evaluation draws from the seed's stream, as in its run alone
        try:
            status, reason, metrics, art = _evaluate(s.probe, alg, s.runaway, it, clock)
        except Diverged as e:
            (status, reason, metrics), art = _diverged(e, it), {}
        s.result.update(status=status, reason=reason, metrics=metrics, art=art)
        s.result["wall"] += time.perf_counter() - e0
        s.result["cpu"] += time.process_time() - c0
    out = []
    for s in seeds:
        r = s.result
        rows = _rows(s.cell, s.target, s.probe, dev, r["status"], r["reason"], r["it"], r["train_time"], r["wall"],
                     r["cpu"], r["work"], r["metrics"], {"stacked_seeds": n_stack, **_resumed_column(resumed_at)})
        out.append((s.cell.key(), (rows, s.traces, r["art"])))
    return out
