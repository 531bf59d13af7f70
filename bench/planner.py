"""``python -m bench plan``: the projected cost of a sweep, measured on this machine before it runs.

Every distinct cell configuration (cells that differ only by their seed share one) runs once, seed 0, through
the runner itself (``bench.runner.run_cell``, the code path of ``bench run``) with the sweep's settings, cut
short, while a ``PhaseClock`` records the wall time, the CPU time (all threads of this process) and the
energy-gradient evaluations of each phase:

* setup: training data, energy, the algorithm's construction (a flow's pre-training included), at full size;
* training: ``warmup`` iterations, not used for the rate (first calls allocate and warm caches), then timed
  iterations until ``seconds`` of CPU time are spent (at least ``MIN_TIMED`` iterations) or ``iters`` of them;
* one trace point (``eval_every``) at the last of those iterations, at full size (grids, negatives' weights);
* the evaluation chains of R-hat / ESS (``n_chains`` chains of ``burn_in + n_draws`` steps), run at the
  trace point and after training with ``n_draws`` cut to ``CHAIN_FRACTION`` of it (at least ``MIN_DRAWS``) and
  ``burn_in`` in the same proportion;
* the negatives drawn after training (``n_negatives``) cut the same way (at least ``MIN_NEGATIVES``; image
  targets keep all, their sample-quality metrics are computed on them), and drawn once more on the trained
  algorithm after the run to time them alone; the rest of the evaluation (grids, image metrics) at full size;
* the audit of high-dimensional runs (``audit_chains`` chains of ``audit_burn_in + audit_draws`` steps), cut
  the same way.

Projection for one cell (``project``): setup + warm-up + (n_iters - warm-up) x the mean timed iteration
+ n_trace x one trace point + (n_rhat + 1) x the evaluation chains scaled to full length (R-hat along training,
000 Fig. 6, and the one after training) + the negatives scaled to their full number + the rest of the evaluation
+ the audit scaled to full length. The chains' cost is taken as proportional to their length (sampler steps,
and arviz's statistics on the kept draws), which over-counts any fixed part of it; the same for the negatives.
``n_iters`` is the fidelity's, or, with ``--budget``, the iteration at which the energy-gradient evaluations
counted in the short run reach the budget. A cell that would pass ``--cell-timeout`` is cut there (status
timeout: no evaluation).

With ``--stack-seeds`` (``make_plan(stack_seeds=True)``) the seeds of a configuration that stacks train together
in one process, as ``bench.runner.run_stack`` trains them: their training iterations are timed on all of them at
once (``time_stack``), each cell is booked its share (the stack's training over its seeds, as the runner books it),
and the stack is one unit of the pool's schedule; setup, trace points and evaluation stay one seed's.

What it cannot see: an iteration cost that changes later in training (CoopFlow Pre's warm-up phase, an adaptive
ODE solver whose step count grows as the energy sharpens: the algorithm says so, ``cost_changes``, and the plan
prints it beside the projection), divergence (a diverged cell stops early: the projection is an upper bound), and
other processes (the wall time is measured at the load of the moment; the CPU time is not inflated by it, so
"idle" projections are CPU time / threads). Peak memory is the resident set of this process while the
configuration ran (Linux: its high-water mark, reset before each configuration; elsewhere the process's peak
so far), plus the evaluation chains' arrays at full length (their shape times their bytes); on a GPU, torch's
peak allocation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import re
import sys
import textwrap
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

import algorithms
import datasets
from algorithms.base import ConfigError
from bench.errors import BenchError
from bench.progress import fmt_seconds

#: the evaluation chains and the audit run this fraction of their length while timing, and at least MIN_DRAWS
#: draws (so that a fixed cost of a short chain is not multiplied by a large factor)
CHAIN_FRACTION = 0.1
MIN_DRAWS = 50
#: the negatives drawn after training while timing: the same fraction, at least this many
MIN_NEGATIVES = 256
#: timed training iterations at the least, whatever ``seconds`` says
MIN_TIMED = 3
PHASES = ["setup", "train", "trace", "rhat", "evaluate", "audit"]


class PhaseClock:
    """Wall time, CPU time (``time.process_time``: every thread of this process) and energy-gradient evaluations
    per phase of one ``run_cell`` call; the runner marks the end of each phase. The first ``warmup`` training
    steps are booked as "warmup"; ``enough()`` ends training once ``max_iters`` steps are timed, or
    ``MIN_TIMED`` of them and ``seconds`` of their CPU time."""

    def __init__(self, warmup: int = 2, max_iters: int = 50, seconds: float = 2.0, device: str = "cpu"):
        self.warmup, self.max_iters, self.seconds = warmup, max_iters, seconds
        self.cuda = str(device).startswith("cuda")
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.grad: dict[str, int] = defaultdict(int)
        self.n: dict[str, int] = defaultdict(int)
        self.work = self.alg = None
        self._g = 0  # a run's Work starts at 0: the setup's work (a flow's pre-training) counts
        self._w, self._c = self._now()

    def _now(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()

    def follow(self, work, alg) -> None:
        self.work, self.alg = work, alg

    def mark(self, phase: str) -> None:
        if phase == "step" and self.n["warmup"] < self.warmup:
            phase = "warmup"
        w, c = self._now()
        g = self.work.grad_evals if self.work is not None else 0
        self.wall[phase] += w - self._w
        self.cpu[phase] += c - self._c
        self.grad[phase] += g - self._g
        self.n[phase] += 1
        self._w, self._c, self._g = w, c, g

    def enough(self) -> bool:
        k = self.n["step"]
        return k >= self.max_iters or (k >= MIN_TIMED and self.cpu["step"] >= self.seconds)


def shortened(n_draws: int, burn_in: int) -> tuple[int, int]:
    """(draws, burn-in) of chains cut to ``CHAIN_FRACTION`` of their length, but never below ``MIN_DRAWS`` draws
    (nor above the full length), the burn-in in the same proportion: the full length is then the short one times
    n_draws / short draws, for the sampler's steps and for the statistics on the kept draws alike."""
    short = min(n_draws, max(MIN_DRAWS, math.ceil(n_draws * CHAIN_FRACTION)))
    return short, round(burn_in * short / n_draws) if n_draws else burn_in


def shortened_negatives(cell) -> int:
    """The negatives drawn after training while timing: ``CHAIN_FRACTION`` of ``n_negatives``, at least
    ``MIN_NEGATIVES``; all of them on image targets, whose sample-quality metrics on the negatives are not scaled."""
    n = cell.train.n_negatives
    if datasets.get_target(cell.target).has("image"):
        return n
    return min(n, max(MIN_NEGATIVES, math.ceil(n * CHAIN_FRACTION)))


def timing_cell(cell):
    """The cell the planner runs: the same settings, but with one trace point with R-hat at the end of the timed
    iterations, evaluation chains, audit and negatives cut short (``shortened``, ``shortened_negatives``), no
    budget, no time limit (the clock ends training), seed 0."""
    t = cell.train
    n_draws, burn_in = shortened(t.n_draws, t.burn_in)
    audit_draws, audit_burn_in = shortened(t.audit_draws, t.audit_burn_in)
    short = dataclasses.replace(
        t, eval_every=t.eval_every or 10**9, rhat_every=1 if t.n_chains >= 2 else 0, n_draws=n_draws,
        burn_in=burn_in, audit_draws=audit_draws, audit_burn_in=audit_burn_in, n_negatives=shortened_negatives(cell),
        grad_budget=0, time_limit_s=0.0)
    return dataclasses.replace(cell, train=short, seed=0)


def time_negatives(clock: PhaseClock, n: int) -> None:
    """Time, on the trained algorithm, what the evaluation does with its ``n`` negatives (``draw_negatives(n)``
    and ``chain_starts(n)`` for the initial weights), as the phase "negatives"; the projection scales it to the
    full number."""
    with torch.no_grad():
        clock.mark("idle")
        clock.alg.draw_negatives(n)
        clock.alg.chain_starts(n)
        clock.mark("negatives")


def time_audit(clock: PhaseClock, cell, short) -> None:
    """Time the audit alone, as the phase "audit", on the trained energy at the short length ``short`` (the
    TrainConfig the run had): the evaluation ran it once inside its own phase, which the projection takes it out
    of and scales to full length (``bench.evaluation`` computes it among the other quantities, unmarked)."""
    from bench.audit import audit_weights

    target = datasets.get_target(cell.target)
    if not (short.audit_chains and target.has("mixture")):
        return
    clock.mark("idle")
    audit_weights(clock.alg.energy, target, short.audit_chains, short.audit_draws, short.audit_burn_in)
    clock.mark("audit")


def time_stack(cells, device: str, threads: int | None, warmup: int, iters: int, seconds: float):
    """Wall and CPU seconds of one training iteration of ``cells`` (seeds of one configuration) trained together
    (``--stack-seeds``: ``bench.runner.run_stack``), timed as ``PhaseClock`` times one seed's: ``warmup``
    iterations, then timed ones until ``seconds`` of CPU time (at least ``MIN_TIMED``, at most ``iters``). None
    where the built algorithms do not stack (the sweep then runs the seeds one by one)."""
    from algorithms.stacking import stack_of, stackable
    from bench.runner import _Seed

    dev = torch.device(device)
    if dev.type == "cpu" and threads:
        torch.set_num_threads(threads)
    seeds = [_Seed(dataclasses.replace(timing_cell(c), seed=c.seed), dev) for c in cells]
    if not all(stackable(s.alg) for s in seeds):
        return None
    stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds], [s.cpu_gen for s in seeds])
    b = cells[0].train.batch_size
    x = torch.stack([s.data[s.perm[:b]] for s in seeds])  # the first batch of each seed, at every iteration
    clock = PhaseClock(warmup, iters, seconds, device)
    clock.mark("setup")
    while not clock.enough():
        stack.step(x)
        clock.mark("step")
    n = clock.n["step"]
    return clock.wall["step"] / n, clock.cpu["step"] / n


def trace_points(n_iters: int, eval_every: int, rhat_every: int, chains: bool = True) -> tuple[int, int]:
    """(trace points, trace points with R-hat) of a run of ``n_iters`` iterations, as the runner takes them: a
    trace point at every multiple of ``eval_every`` and at the last iteration; R-hat at every ``rhat_every``-th
    of them and at the last one (``bench.evaluation.rhat_point``); none without ``chains``."""
    if not eval_every:
        return 0, 0
    m, r = divmod(n_iters, eval_every)
    n_trace = m + (r != 0)
    if not (rhat_every and chains):
        return n_trace, 0
    return n_trace, m // rhat_every + (0 if r == 0 and m % rhat_every == 0 else 1)


def budget_iterations(n_iters: int, budget: int, g_setup: float, g_step: float, eval_every: int,
                      rhat_every: int, g_trace: float = 0.0, g_rhat: float = 0.0) -> int:
    """The iteration at which the runner stops a run with ``grad_budget`` = ``budget``: the first one after
    whose training step the work counted since the start (setup, steps, and the trace / R-hat points taken so
    far, whose evaluation chains count too) reaches the budget; ``n_iters`` if it never does."""
    g, it = g_setup, 0
    while it < n_iters:
        stop = min(n_iters, (it // eval_every + 1) * eval_every) if eval_every else n_iters
        need = math.ceil((budget - g) / g_step) if g_step > 0 else math.inf
        if need <= stop - it:
            return it + max(need, 1)
        g += (stop - it) * g_step
        it = stop
        if eval_every and it % eval_every == 0 and it < n_iters:
            g += g_trace + (g_rhat if rhat_every and (it // eval_every) % rhat_every == 0 else 0.0)
    return n_iters


@dataclass
class Projection:
    """One cell's projected cost by phase (seconds of one clock), its iterations and its trace points."""

    phases: dict[str, float]
    n_iters: int
    n_trace: int
    n_rhat: int
    grad_evals: float
    timeout: bool = False

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def project(clock: PhaseClock, times: dict[str, float], train, short, budget_iters: int | None = None) -> Projection:
    """The full run's cost (``train``: its TrainConfig) from the phase ``times`` (``clock.wall`` or ``clock.cpu``)
    of the short run (``short``: the TrainConfig it ran with), by the rules of the module docstring."""
    n = clock.n
    n_iters = budget_iters if budget_iters is not None else train.iterations()
    n_step, n_warm = n["step"], n["warmup"]
    per_step = times["step"] / n_step if n_step else times["warmup"] / max(n_warm, 1)
    warm = min(n_warm, n_iters)
    train_t = times["warmup"] * (warm / n_warm if n_warm else 0) + per_step * max(n_iters - warm, 0)
    chains = train.n_chains >= 2 and train.n_draws >= 4
    n_trace, n_rhat = trace_points(n_iters, train.eval_every, train.rhat_every, chains)
    per_trace = times["trace"] / n["trace"] if n["trace"] else 0.0
    # one evaluation-chain run at the short length, scaled to the full length
    short_len = short.burn_in + short.n_draws
    per_chain = (times["rhat"] / n["rhat"]) * (train.burn_in + train.n_draws) / short_len \
        if chains and n["rhat"] else 0.0
    short_chain = times["rhat"] / n["rhat"] if n["rhat"] else 0.0
    evaluated = n["evaluate"] > 0
    # the negatives drawn while timing (phase "negatives", timed again after the run) scaled to their full number
    neg = times["negatives"] * (train.n_negatives / short.n_negatives - 1) if n["negatives"] else 0.0
    # the audit ran inside the evaluation at its short length (phase "audit": the same audit timed alone after
    # the run): taken out of the evaluation and scaled to full length
    a_short = times["audit"] / n["audit"] if n["audit"] else 0.0
    rest = times["evaluate"] - (short_chain if chains else 0.0) - a_short
    eval_t = (max(rest, 0.0) + per_chain + neg) if evaluated else 0.0
    a_len = short.audit_burn_in + short.audit_draws
    audit_t = a_short * (train.audit_burn_in + train.audit_draws) / a_len if evaluated and a_len else 0.0
    phases = {"setup": times["setup"], "train": train_t, "trace": per_trace * n_trace, "rhat": per_chain * n_rhat,
              "evaluate": eval_t, "audit": audit_t}
    g_step = clock.grad["step"] / n_step if n_step else clock.grad["warmup"] / max(n_warm, 1)
    g_chain = (clock.grad["rhat"] / n["rhat"]) * (train.burn_in + train.n_draws) / short_len if n["rhat"] else 0.0
    grads = clock.grad["setup"] + g_step * n_iters + g_chain * n_rhat
    return Projection(phases, n_iters, n_trace, n_rhat, grads)


def cut_at_timeout(wall: Projection, cpu: Projection, limit: float) -> tuple[Projection, Projection]:
    """A run whose training (with its trace points) passes ``limit`` seconds of wall time stops there as a
    timeout, without evaluation: both projections cut in proportion."""
    spent = wall.phases["train"] + wall.phases["trace"] + wall.phases["rhat"]
    if not limit or spent <= limit:
        return wall, cpu
    f = limit / spent
    out = []
    for p in (wall, cpu):
        ph = {k: (v * f if k in ("train", "trace", "rhat") else v) for k, v in p.phases.items()}
        ph["evaluate"] = ph["audit"] = 0.0
        out.append(Projection(ph, int(p.n_iters * f), p.n_trace, p.n_rhat, p.grad_evals * f, timeout=True))
    return out[0], out[1]


# --- memory -----------------------------------------------------------------------------------------------

def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def reset_peak_memory() -> bool:
    """Free what can be freed and reset this process's resident-set high-water mark (Linux); False where it
    cannot be reset (the peak is then the process's so far)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap to the OS, so the mark starts low
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def peak_memory_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return kib if sys.platform == "darwin" else kib * 1024
    return kib * 1024


def chain_bytes(train, short, dim: int) -> int:
    """Bytes the evaluation chains and the audit hold at full length beyond their length while timing: the
    sampler's (chain, draw, dim) tensor in the model's dtype and the kept draws as float64."""
    size = 8 if train.dtype == "float64" else 4
    extra = 0
    if train.n_chains >= 2:
        extra += train.n_chains * dim * ((train.burn_in + train.n_draws - short.burn_in - short.n_draws) * size
                                         + (train.n_draws - short.n_draws) * 8)
    if train.audit_chains:
        extra += train.audit_chains * dim * (train.audit_draws - short.audit_draws) * (size + 8)
    return max(extra, 0)


# --- the plan ---------------------------------------------------------------------------------------------

def _config_key(cell) -> str:
    import json

    return json.dumps([cell.suite, cell.target, cell.algorithm, cell.fidelity, cell.base, cell.config()],
                      sort_keys=True, default=str)


def makespan(durations: list[float], n_jobs: int) -> float:
    """Wall time of running ``durations`` in order on ``n_jobs`` workers, each taking the next cell when free
    (as the sweep's process pool does)."""
    free = [0.0] * max(1, n_jobs)
    for d in durations:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += d
    return max(free) if durations else 0.0


def _fmt_bytes(b: float) -> str:
    if b != b:
        return "?"
    for unit, k in (("GiB", 2**30), ("MiB", 2**20)):
        if b >= 1000 * k / 1024:
            return f"{b / k:.3g} {unit}"
    return f"{b / 2**10:.3g} KiB"


@dataclass
class Plan:
    """The projected cost of a sweep: ``configs`` has one row per cell configuration (its cells, projected
    iterations, trace points, seconds per phase of CPU time, wall and CPU time per cell, peak memory, how it was
    timed); ``str(plan)`` is the report ``bench plan`` prints."""

    configs: pd.DataFrame
    n_jobs: int
    threads: int
    device: str
    machine: dict
    finished: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def cells(self) -> int:
        return int(self.configs["cells"].sum()) if len(self.configs) else 0

    @property
    def cpu_hours(self) -> float:
        c = self.configs
        return float((c["cpu_s"] * c["cells"]).sum() / 3600) if len(c) else 0.0

    def wall_s(self, idle: bool = False) -> float:
        """Projected wall time of the whole sweep with its ``n_jobs`` processes: at the load measured while
        timing, or (``idle``) on free cores (each cell's CPU time / its threads)."""
        c = self.configs
        per = c.apply(lambda r: r["cpu_s"] / r["threads"] if idle else r["wall_s"], axis=1) \
            if len(c) else pd.Series(dtype=float)
        stacked = c["stacked_seeds"] if "stacked_seeds" in c else [0] * len(c)
        durations = [float(d) * n if s else float(d)  # seeds trained together: one unit, n cells' shares
                     for d, n, s in zip(per, c["cells"], stacked, strict=True) for _ in range(1 if s else int(n))]
        return makespan(durations, self.n_jobs)

    def save(self, path) -> None:
        """The per-configuration table as CSV (with the machine, load and code version in every row), for
        docs/reproduction.md's projected costs; written atomically."""
        from bench.store import atomic_write_csv

        atomic_write_csv(Path(path), self.configs.assign(**{k: v for k, v in self.machine.items()
                                                             if not isinstance(v, dict | list)}))

    def __str__(self) -> str:
        m = self.machine
        c = self.configs
        lines = []
        head = f"bench plan: {m['suite']}, {m['fidelity']} fidelity, {self.cells} cells"
        head += f" in {len(c)} configurations" if len(c) != self.cells else ""
        head += f"; {self.device}, -j {self.n_jobs} ({self.threads} torch thread{'s' * (self.threads > 1)} per process)"
        lines.append(head)
        if self.finished:
            lines.append(f"{self.finished} cells already finished in {m['out']}: not counted")
        lines.append(f"timed on {m['cpu']} ({m['cpu_count']} cores), load average {m['load_before']:.2f} before and "
                     f"{m['load_after']:.2f} after timing; code {m['code_version']}")
        if not len(c):
            lines.append("nothing to run")
            return "\n".join(lines)
        cols = ["target", "algorithm", "cells", "iters", "timed", "cpu/iter"] + [f"%{p}" for p in PHASES] + [
            "wall/cell", "CPU/cell", "peak mem"]
        rows = []
        for r in c.itertuples():
            share = {p: getattr(r, f"{p}_s") / r.cpu_s * 100 if r.cpu_s > 0 else 0 for p in PHASES}
            iters = f"{r.n_iters}" + ("*" if r.timeout else "")
            rows.append([r.target, r.algorithm, str(r.cells), iters, str(r.timed_iters), f"{r.cpu_per_iter_s:.3g} s",
                         *[f"{share[p]:.0f}" for p in PHASES], fmt_seconds(r.wall_s), fmt_seconds(r.cpu_s),
                         _fmt_bytes(r.peak_mem_bytes)])
        width = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(cols)]
        lines.append("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(cols, width,
                                                                                                  strict=True))))
        for x in rows:
            lines.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(x, width,
                                                                                                    strict=True))))
        peak = float(c["peak_mem_bytes"].max())
        lines.append(f"total: {self.cells} cells, {self.cpu_hours:.3g} CPU-hours; wall with -j {self.n_jobs}: "
                     f"{fmt_seconds(self.wall_s())} at the measured load, "
                     f"{fmt_seconds(self.wall_s(idle=True))} on idle cores; "
                     f"peak memory {_fmt_bytes(peak)} per process"
                     + (f", up to {_fmt_bytes(peak * self.n_jobs)} for {self.n_jobs} processes" if self.n_jobs > 1
                        else ""))
        how = (f"how: each configuration ran once (seed 0) through the runner, with the torch threads the sweep "
               f"gives it (up to {self.threads}; one for small batches): {m['warmup']} warm-up iterations (not in "
               f"the rate), then at least {MIN_TIMED} and at most {m['iters']} timed ones (until {m['seconds']:g} s "
               f"of CPU time; column 'timed'); one trace point at full size; the evaluation chains and the audit at "
               f"{CHAIN_FRACTION:.0%} of their length (at least {MIN_DRAWS} draws) and the negatives drawn after "
               f"training at {CHAIN_FRACTION:.0%} of their number, scaled to full size; setup "
               "(data, energy, flow pre-training) at full size. %phase: share of a cell's projected CPU time "
               "(setup, training, trace points, R-hat along training, evaluation after training, audit). Wall time "
               "at the load measured while timing; 'idle' is CPU time / threads. Not foreseen: divergence (a "
               "diverging cell stops early) and costs that change later in training (a note names the cells whose "
               "algorithm says its cost does). Peak memory: resident set "
               "while timing, plus the evaluation chains at full length.")
        lines.append(textwrap.fill(how, 110, subsequent_indent="  "))
        lines += self.notes
        return "\n".join(lines)


def warm_imports() -> None:
    """Import what a run imports on first use (arviz-stats for R-hat / ESS: about 2 s), so that the first
    configuration timed does not book it in a short chain that the projection then multiplies by ten."""
    import numpy as np

    from metrics.mixing import ess_bulk, max_rhat

    x = np.random.default_rng(0).normal(size=(2, 8, 1))
    max_rhat(x), ess_bulk(x)


def _time_config(cell, device: str, threads: int, warmup: int, iters: int, seconds: float):
    from bench.runner import EVALUATED, run_cell

    short = timing_cell(cell)
    cuda = str(device).startswith("cuda")
    resettable = reset_peak_memory()
    if cuda:
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    clock = PhaseClock(warmup, iters, seconds, device)  # after the reset: its gc and trim are not the cell's
    try:
        rows, _, _ = run_cell(short, device=device, threads=threads, clock=clock)
        mem = peak_memory_bytes()
        evaluated = rows and rows[0]["status"] in EVALUATED  # trained to the end and evaluated
        if evaluated and short.train.n_negatives < cell.train.n_negatives:
            time_negatives(clock, short.train.n_negatives)
        if evaluated:
            time_audit(clock, cell, short.train)
        clock.alg = clock.work = None  # freed before the next configuration's memory is measured
        short = short.train
    except ConfigError as e:  # a constraint only the algorithm's construction can check (as in bench.sweep)
        raise BenchError(f"{cell.suite} [fidelity.{cell.fidelity}] {cell.algorithm}/{cell.target}: {e}") from None
    gpu = torch.cuda.max_memory_allocated(torch.device(device)) if cuda else None
    status = rows[0]["status"] if rows else "?"
    reason = rows[0]["reason"] if rows else ""
    return clock, short, status, reason, mem, resettable, gpu


def make_plan(cells, device: str = "cpu", jobs: int = 0, out: Path | None = None, across_code: bool = False,
              iters: int = 50, seconds: float = 2.0, warmup: int = 2, progress: bool = True,
              threads: int | None = None, stack_seeds: bool = False) -> Plan:
    """Time every distinct configuration of ``cells`` (already validated: ``bench.api.resolve``) and project the
    sweep (module docstring). ``out``: cells finished there (as ``run`` would see them) are left out.
    ``threads``: torch threads per process instead of the sweep's share of the cores (``bench.sweep.parallelism``).
    ``stack_seeds`` (as ``run --stack-seeds``): the seeds of a configuration that stacks (``bench.runner.may_stack``)
    train together in one process; their training is timed so (``time_stack``, on all of them at once) and each
    cell is booked its share, as the runner books it; setup, trace points and evaluation stay one seed's, and the
    stack is one unit of the pool's schedule."""
    from bench.formats import environment
    from bench.runner import EVALUATED, cell_threads, may_stack
    from bench.store import ResultStore, code_version
    from bench.sweep import parallelism, stamp, unfinished

    first = cells[0]
    stamp(cells)
    warm_imports()
    finished = 0
    if out is not None and Path(out).is_dir():
        todo = unfinished(cells, ResultStore(out), across_code=across_code)
        finished = len(cells) - len(todo)
        cells = todo
    n_jobs, share = parallelism(max(len(cells), 1), device, jobs)
    threads = threads or share
    groups: dict[str, list] = {}
    for c in cells:
        groups.setdefault(_config_key(c), []).append(c)
    env = environment(device)
    machine = {"suite": first.suite, "fidelity": first.fidelity, "out": str(out) if out else "",
               "cpu": env["cpu"], "cpu_count": env["cpu_count"], "code_version": code_version(),
               "load_before": os.getloadavg()[0], "warmup": warmup, "iters": iters, "seconds": seconds,
               "jobs": n_jobs, "device": device, "torch": env["torch"]["version"]}
    rows, notes = [], []
    bar = tqdm(groups.values(), desc="timing", unit="config", disable=not progress)
    saved = torch.get_num_threads()
    try:
        for group in bar:
            cell = group[0]
            bar.set_postfix_str(f"{cell.algorithm}/{cell.target}")
            clock, short, status, reason, mem, resettable, gpu = _time_config(cell, device, threads, warmup, iters,
                                                                                seconds)
            budget_iters = None
            if cell.train.grad_budget:
                n_step, n_warm = clock.n["step"], clock.n["warmup"]
                g_step = clock.grad["step"] / n_step if n_step else clock.grad["warmup"] / max(n_warm, 1)
                short_len = short.burn_in + short.n_draws
                g_rhat = (clock.grad["rhat"] / clock.n["rhat"]) * (cell.train.burn_in + cell.train.n_draws) \
                    / short_len if clock.n["rhat"] else 0.0
                budget_iters = budget_iterations(cell.train.iterations(), cell.train.grad_budget,
                                                 clock.grad["setup"], g_step, cell.train.eval_every,
                                                 cell.train.rhat_every, 0.0, g_rhat)
            wall = project(clock, clock.wall, cell.train, short, budget_iters)
            cpu = project(clock, clock.cpu, cell.train, short, budget_iters)
            stacked = stack_seeds and len(group) > 1 and may_stack(cell) and \
                time_stack(group, device, cell_threads(cell, threads) or threads, warmup, iters, seconds)
            if stacked:  # training is the stack's, each cell's share of it; the time limit applies to the stack
                mem = peak_memory_bytes()  # the high-water mark since the reset: the stack's too
                for p, per_iter in zip((wall, cpu), stacked, strict=True):
                    p.phases["train"] = per_iter * p.n_iters / len(group)
            wall, cpu = cut_at_timeout(wall, cpu, cell.train.time_limit_s / (len(group) if stacked else 1))
            timed = clock.n["step"]
            dim = datasets.get_target(cell.target).dim
            row = {"suite": cell.suite, "fidelity": cell.fidelity, "target": cell.target, "algorithm": cell.algorithm,
                   "settings": cell.settings, "cells": len(group), "seeds": " ".join(str(c.seed) for c in group),
                   "stacked_seeds": len(group) if stacked else 0,
                   "stack_cpu_per_iter_s": stacked[1] if stacked else float("nan"),
                   "n_iters": cpu.n_iters, "timed_iters": timed, "warmup_iters": clock.n["warmup"],
                   "threads": cell_threads(cell, threads) or threads,
                   "cpu_per_iter_s": (clock.cpu["step"] / timed) if timed else float("nan"),
                   "wall_per_iter_s": (clock.wall["step"] / timed) if timed else float("nan"),
                   "n_trace": cpu.n_trace, "n_rhat": cpu.n_rhat,
                   **{f"{p}_s": cpu.phases[p] for p in PHASES},
                   "cpu_s": cpu.total, "wall_s": wall.total, "grad_evals": cpu.grad_evals,
                   "peak_mem_bytes": mem + chain_bytes(cell.train, short, dim), "peak_mem_reset": resettable,
                   "gpu_peak_bytes": gpu, "timing_cpu_s": sum(clock.cpu.values()),
                   "timing_wall_s": sum(clock.wall.values()), "timing_status": status, "timeout": cpu.timeout}
            rows.append(row)
            if status not in EVALUATED:
                notes.append(f"note: {cell.algorithm}/{cell.target} stopped while timing ({status}: {reason}); its "
                             "evaluation was not measured and is left out")
            if stacked:
                notes.append(f"note: {cell.algorithm}/{cell.target}: {len(group)} seeds trained together "
                             f"(--stack-seeds), {stacked[1]:.3g} s CPU per iteration of the stack, "
                             f"{stacked[1] / max(row['cpu_per_iter_s'], 1e-12):.2f}x one seed's")
            changes = getattr(algorithms.ALGORITHMS.get(cell.base), "cost_changes", lambda _: "")(cell.algo)
            if changes:
                notes.append(f"note: {cell.algorithm}/{cell.target}: {changes}")
            if cpu.timeout:
                notes.append(f"note: {cell.algorithm}/{cell.target} would pass --cell-timeout "
                             f"{cell.train.time_limit_s:g} s (iterations marked *): recorded as timeout")
    finally:
        bar.close()
        torch.set_num_threads(saved)
    machine["load_after"] = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if len(rows) and max(r["threads"] for r in rows) > 1 and max(machine["load_before"], machine["load_after"]) > cores:
        notes.append(f"note: timed with several torch threads per process on a loaded machine (load above its {cores} "
                     "cores): threads waiting for each other inflate the CPU time (measured 9x on gmm50d paper "
                     f"jarzynski); -j {cores} times one thread per process")
    if not all(r["peak_mem_reset"] for r in rows):
        notes.append("note: this system cannot reset a process's peak memory: 'peak mem' is the planner's peak so far")
    return Plan(pd.DataFrame(rows), n_jobs, threads, device, machine, finished, notes)


__all__ = ["Plan", "PhaseClock", "make_plan", "project", "trace_points", "budget_iterations"]
