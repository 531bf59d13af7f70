"""Command line: python -m bench run|plan|list|table|plot|report|baseline|check|reproduction.

Bad input (unknown names, malformed files, invalid values) and faults (a folder that cannot be written, a full
disk, a corrupt results file, an unreachable scheduler) print one line, ``bench: error: ...``, and exit with
status 2; bad input is found before any cell runs and nothing is written. Exit status 1: ``check`` found a
regression; 130, 143, 129: stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP (128 + the signal's number), with one
line saying which cells are saved (cells in flight are abandoned; the same command resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import signal
import sys
from pathlib import Path

from bench.api import default_out
from bench.errors import BenchError, Interrupted
from bench.stopping import stop_on_signals
from metrics.sample_quality import SetupError

#: seconds to wait for a Dask scheduler to answer before giving up
DASK_CONNECT_TIMEOUT_S = 10


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise BenchError(message)


def _names(values):
    """Accept both ``--algorithms a b`` and ``--algorithms a,b``."""
    if values is None:
        return None
    return [n for v in values for n in v.split(",") if n]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    r = sub.add_parser("run", help="train and evaluate every cell of a suite")
    r.add_argument("--suite", required=True, help="a suite name (python -m bench list) or the path of a suite file")
    r.add_argument("--fidelity", default="quick", help="smoke | quick | paper (default quick)")
    r.add_argument("--algorithms", nargs="+", help="subset of the suite's algorithms")
    r.add_argument("--targets", nargs="+", help="subset of the suite's targets")
    r.add_argument("--seeds", type=int, help="number of seeds (default: the fidelity's)")
    r.add_argument("--out", type=Path, help="results folder (default ./results/<suite>-<fidelity>)")
    r.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    r.add_argument("--data-dir", type=Path, help="folder of image data files (MNIST / Fashion-MNIST IDX, CIFAR-10 "
                   "batches); default: the suite file's data_dir, else $EBM_BENCH_DATA (datasets/images.py)")
    r.add_argument("-j", "--jobs", type=int, default=0, help="parallel cells (default: one per CPU core)")
    r.add_argument("--no-report", action="store_true", help="skip tables and figures after the run")
    r.add_argument("--force", action="store_true", help="recompute cells already finished in --out")
    r.add_argument("--resume-across-code", action="store_true",
                   help="count a cell finished in --out under another code version (all else the same; settings "
                   "added since count as the same at their defaults) as finished: resume a paper run from committed "
                   "result rows on later code; the rows keep their code version")
    r.add_argument("--stack-seeds", action="store_true",
                   help="train the seeds of each cell together as one stacked model in one process (ULA-EBM / PCD, CD, "
                   "short-run, full-batch Jarzynski, flowMC-EBM, NT-EBM with MALA, CoopFlow; other algorithms one seed "
                   "at a time): the same results per seed up to rounding, stored and resumed per seed, several times "
                   "faster on small models")
    r.add_argument("--checkpoint-every", type=float, metavar="MINUTES",
                   help="save each training cell's state in <out>/checkpoints every so many minutes (default 10; "
                   "0: never): the same command after a stop resumes a cell there, with the numbers of an "
                   "uninterrupted run")
    r.add_argument("--budget", type=int, help="stop each run after this many energy-gradient evaluations")
    r.add_argument("--cell-timeout", type=float, help="record a cell as timeout after this many seconds")
    r.add_argument("--backend", default="local", help="local (joblib processes) | dask (a Dask cluster)")
    r.add_argument("--scheduler", help="Dask scheduler address (tcp://HOST:PORT) for --backend dask; "
                   f"given up after {DASK_CONNECT_TIMEOUT_S} s without an answer")
    r.add_argument("--inception-weights", type=Path, metavar="PATH",
                   help="local Inception-v3 weights for FID/KID/IS (torch-fidelity's weights-inception-2015-12-05-"
                   "6726825d.pth; checked before any cell runs, never downloaded); "
                   "default: the suite file's inception_weights, else $EBM_BENCH_INCEPTION_WEIGHTS")

    pl = sub.add_parser("plan", help="project a sweep's wall time, CPU-hours and memory by timing a few iterations of "
                        "each cell configuration on this machine (writes nothing)")
    pl.add_argument("--suite", required=True, help="as for run")
    pl.add_argument("--fidelity", default="quick", help="smoke | quick | paper (default quick)")
    pl.add_argument("--algorithms", nargs="+", help="as for run")
    pl.add_argument("--targets", nargs="+", help="as for run")
    pl.add_argument("--seeds", type=int, help="as for run")
    pl.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    pl.add_argument("-j", "--jobs", type=int, default=0,
                    help="parallel cells the run would use (default: one per core)")
    pl.add_argument("--budget", type=int, help="as for run: each run stops after this many energy-gradient evaluations")
    pl.add_argument("--cell-timeout", type=float, help="as for run")
    pl.add_argument("--data-dir", type=Path, help="as for run")
    pl.add_argument("--inception-weights", type=Path, metavar="PATH", help="as for run")
    pl.add_argument("--out", type=Path, help="leave out the cells already finished in this results folder (read only)")
    pl.add_argument("--resume-across-code", action="store_true", help="as for run, for the cells left out with --out")
    pl.add_argument("--stack-seeds", action="store_true", help="as for run: the seeds of a cell that stacks are timed "
                    "training together")
    pl.add_argument("--iters", type=int, default=50, help="at most this many timed iterations per configuration "
                    "(default 50)")
    pl.add_argument("--seconds", type=float, default=2.0, help="stop timing a configuration's iterations after this "
                    "much CPU time (default 2; at least 3 iterations)")
    pl.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    pl.add_argument("--save", type=Path, metavar="CSV", help="also write the per-configuration projection to this "
                    "CSV file (e.g. for docs/reproduction.md)")

    rep = sub.add_parser("reproduction", help="build docs/reproduction.md from the committed result folders, the "
                         "published numbers and the verdict files")
    rep.add_argument("--root", type=Path, default=Path("."), help="repository root (default: the working directory)")
    rep.add_argument("--out", type=Path, help="where to write the page (default ROOT/docs/reproduction.md)")
    rep.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page on disk is not what "
                     "the committed results and verdict files give")

    ls = sub.add_parser("list", help="suites, algorithms, targets, energies and metrics, with where each comes from")
    ls.add_argument("--suite", help="also list the plug-ins of this suite file ([plugins.*] module:Class)")

    for name, helptext in (("baseline", "write a baseline file from a quick sweep (run, or read with --results)"),
                           ("check", "compare a sweep with a baseline file; exit 1 on any regression")):
        b = sub.add_parser(name, help=helptext)
        b.add_argument("--suite", required=True)
        b.add_argument("--fidelity", default="quick")
        b.add_argument("--baseline", type=Path,
                       help="baseline file (default ./results/baselines/<suite>-<fidelity>.csv)")
        b.add_argument("--results", type=Path, help="read this results folder instead of running the sweep")
        b.add_argument("--algorithms", nargs="+", help="algorithms to include (baseline: default the fidelity's; "
                       "check: default the baseline's)")
        if name == "baseline":
            b.add_argument("--seeds", type=int, help="seeds (default 8: the 4 the check re-runs and 4 that calibrate "
                           "the seed spread; at least 3)")
        else:
            b.add_argument("--targets", nargs="+", help="targets to check (default: the baseline's)")
        b.add_argument("--out", type=Path, help="where the sweep runs (default results/<suite>-<fidelity>)")
        b.add_argument("-j", "--jobs", type=int, default=0)
        if name == "baseline":
            b.add_argument("--force", action="store_true", help="replace an existing baseline file")

    tp = sub.add_parser("test-plugin", help="check an algorithm, target, energy or metric as the suite checks its own")
    tp.add_argument("name", help="a registered name (built-in, an entry point, or a plug-in of --suite), or "
                    "module:Object (a module in the working directory)")
    tp.add_argument("--kind", choices=("algorithms", "targets", "energies", "metrics"),
                    help="which kind NAME is, where it names entries of several kinds")
    tp.add_argument("--suite", help="a suite file whose [plugins.*] names the plug-in")
    tp.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="settings of an algorithm's Config for the tiny case (TOML values)")
    tp.add_argument("--iters", type=int, default=150, help="training iterations of an algorithm (default 150)")

    rp = sub.add_parser("report", help="write a self-contained HTML report of a results folder")
    rp.add_argument("--results", type=Path, help="results folder (default results/<suite>-<fidelity>)")
    rp.add_argument("--suite", default="toy2d")
    rp.add_argument("--fidelity", default="quick")

    for name, helptext in (("table", "print and save the tables of a results folder"),
                           ("plot", "draw the figures of a results folder")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("--results", type=Path, help="results folder (default results/<suite>-<fidelity>)")
        t.add_argument("--suite", default="toy2d")
        t.add_argument("--fidelity", default="quick")
        if name == "plot":
            t.add_argument("--x", default="iteration", help="iteration | work (energy-gradient evaluations)")
    return p


def cmd_run(args) -> int:
    from bench.api import run
    from bench.store import ResultStore

    out = args.out or default_out(args.suite, args.fidelity)
    run(args.suite, args.fidelity, _names(args.algorithms), _names(args.targets), args.seeds, out, args.device,
        args.jobs, args.force, args.budget, args.cell_timeout, args.backend, args.scheduler, DASK_CONNECT_TIMEOUT_S,
        args.data_dir, args.inception_weights, args.resume_across_code, stack_seeds=args.stack_seeds,
        checkpoint_every_min=args.checkpoint_every)
    print(f"results: {out / 'results.csv'}")
    if not args.no_report:
        _report(ResultStore(out))
    return 0


def cmd_plan(args) -> int:
    from bench.api import plan

    if args.save is not None and (args.save.is_dir() or args.save.suffix != ".csv"):
        raise BenchError(f"--save {args.save}: expected the path of a .csv file")
    p = plan(args.suite, args.fidelity, _names(args.algorithms), _names(args.targets), args.seeds, args.out,
             args.device, args.jobs, args.budget, args.cell_timeout, args.resume_across_code, args.iters,
             args.seconds, args.warmup, data_dir=args.data_dir, inception_weights=args.inception_weights,
             stack_seeds=args.stack_seeds)
    print(p)
    if args.save is not None:
        p.save(args.save)
        print(f"projection: {args.save}")
    return 0


def cmd_reproduction(args) -> int:
    from bench.reproduction import build_page

    root = args.root
    out = args.out or root / "docs" / "reproduction.md"
    page = build_page(root)
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != page:
            print(f"{out} is out of date: run 'python -m bench reproduction' and commit it", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    from bench.store import atomic_write_bytes

    atomic_write_bytes(out, page.encode())
    print(f"page: {out}")
    return 0


def _report(store) -> None:
    from bench import plots
    from bench.report import write_tables

    print(write_tables(store))
    for f in plots.make_all(store):
        print(f"figure: {f}")


def _store(args):
    from bench.store import RESULTS, ResultStore

    out = args.results or default_out(args.suite, args.fidelity)
    if not (out / RESULTS).exists():
        raise BenchError(f"{out}: no {RESULTS} (run 'python -m bench run' first or pass --results)")
    return ResultStore(out)


def _writable_store(args):
    """The results folder of a command that must write into it (figures, report): checked before any work."""
    from bench.store import check_writable

    store = _store(args)
    store.results()
    check_writable(store.out, "--results")
    return store


def cmd_table(args) -> int:
    from bench.report import write_tables

    print(write_tables(_store(args)))
    return 0


def cmd_plot(args) -> int:
    from bench.api import plot

    for f in plot(args.results or default_out(args.suite, args.fidelity), args.x):
        print(f"figure: {f}")
    return 0


def _sweep_results(args, algorithms=None, seeds=None, targets=None):
    """The results of a suite's sweep: read from --results, or run (finished cells are reused)."""
    from bench.store import ResultStore, check_writable
    from bench.suite import load_suite, resolve_cells
    from bench.sweep import run_sweep

    if args.results:
        return _store(args).results()
    suite = load_suite(args.suite)
    cells = resolve_cells(suite, args.fidelity, algorithms, targets, seeds)
    if args.jobs < 0:
        raise BenchError(f"-j must be >= 0, got {args.jobs}")
    out = args.out or default_out(args.suite, args.fidelity)
    check_writable(out, "--out")
    run_sweep(cells, out, jobs=args.jobs)
    res = ResultStore(out).results()
    return res[res["cell_id"].isin({c.cell_id() for c in cells})]


def _baseline_path(args) -> Path:
    """--baseline, else results/baselines/<suite>-<fidelity>.csv under the working directory: the committed
    baselines live in the repository (results/baselines/), not in an installed package."""
    return args.baseline or Path("results") / "baselines" / f"{Path(args.suite).stem}-{args.fidelity}.csv"


def cmd_baseline(args) -> int:
    from bench.check import ALPHA, BASELINE_SEEDS, CHECK_SEEDS, MIN_SEEDS, check_rows, false_alarms, write_baseline

    path = _baseline_path(args)
    if path.exists() and not args.force:
        raise BenchError(f"{path}: a baseline exists; pass --force to replace it")
    seeds = BASELINE_SEEDS if args.seeds is None else args.seeds
    if seeds < MIN_SEEDS and not args.results:
        raise BenchError(f"--seeds {seeds}: a baseline needs at least {MIN_SEEDS} seeds to estimate the seed spread")
    res = check_rows(_sweep_results(args, _names(args.algorithms), seeds), args.suite, args.fidelity,
                     str(args.results or "the sweep"))
    n_check = min(CHECK_SEEDS, int(res["seed"].nunique()))
    base = write_baseline(res, path, n_check)
    print(f"baseline: {path} ({len(base)} metrics of {base['algorithm'].nunique()} algorithms, "
          f"checked by: {', '.join(f'{k} {v}' for k, v in base['check'].value_counts().items())}; "
          f"bench check re-runs seeds 0-{n_check - 1})")
    n_seeds = int(res["seed"].nunique())
    if math.comb(n_seeds + n_check, n_check) * ALPHA < 2:
        print(f"warning: {n_seeds} baseline + {n_check} check seeds can be arranged only "
              f"{math.comb(n_seeds + n_check, n_check)} ways: the check's permutation test can hardly reach "
              f"{ALPHA:.0%} (8 seeds: 495 ways)")
    if n_seeds >= 2 * n_check:
        fa = false_alarms(res, n_seeds - n_check, n_check)
        print(f"false alarms of unchanged code on these seeds (each split of the {n_seeds} seeds into "
              f"{n_seeds - n_check} baseline and {n_check} check seeds is one gate run): {fa['runs']} of "
              f"{fa['splits']} runs ({fa['runs'] / fa['splits']:.1%}), {fa['alarms']} alarms in {fa['tests']} tests")
    return 0


def cmd_check(args) -> int:
    from bench.check import check_rows, compare, first_seeds, read_baseline, regressions, render

    path = _baseline_path(args)
    if not path.exists():
        raise BenchError(f"{path}: no such baseline; give one with --baseline PATH (the repository's "
                         f"results/baselines/{path.name}) or make one with 'python -m bench baseline'")
    base = read_baseline(path)
    base = base[(base["suite"] == args.suite) & (base["fidelity"] == args.fidelity)]
    if base.empty:
        raise BenchError(f"{path}: no entries for suite {args.suite} at fidelity {args.fidelity}")
    for col, names in (("algorithm", args.algorithms), ("target", args.targets)):
        if names:
            unknown = sorted(set(names) - set(base[col]))
            if unknown:
                raise BenchError(f"--{col}s: {', '.join(unknown)} not in the baseline {path} "
                                 f"(it has: {', '.join(sorted(base[col].unique()))})")
            base = base[base[col].isin(names)]
    seeds = int(base["n_check"].max())
    res = _sweep_results(args, sorted(base["algorithm"].unique()), seeds, sorted(base["target"].unique()))
    if args.results:
        res = first_seeds(check_rows(res, args.suite, args.fidelity, str(args.results)), seeds)
        res = res[res["algorithm"].isin(base["algorithm"]) & res["target"].isin(base["target"])]
    cmp = compare(res, base)
    print(render(cmp), end="")
    return 1 if len(regressions(cmp)) else 0


def cmd_report(args) -> int:
    from bench.html import write_report

    print(f"report: {write_report(_writable_store(args))}")
    return 0


def _plugin_under_test(args):
    """(kind, registered name or None, object) of ``bench test-plugin NAME``."""
    from bench import plugins, registry
    from bench.suite import load_suite

    plugins.load_entry_points()
    if args.suite:
        load_suite(args.suite)
    where = f"test-plugin {args.name}"
    if ":" in args.name:
        obj = plugins.load_ref(args.name, str(Path.cwd()), where)
        kind = args.kind or _kind_of(obj, where)
        name = getattr(obj, "name", "") or args.name.split(":")[-1]
        obj = plugins.member(kind, name, obj, {}, where)
        registry.check(kind, getattr(obj, "name", name), obj, where)
        return kind, None, obj
    kinds = [k for k in registry.KINDS if args.name in registry.table(k) and args.kind in (None, k)]
    if not kinds:
        kinds_text = registry.singular(args.kind) if args.kind else "algorithm, target, energy or metric"
        valid = sorted(registry.table(args.kind)) if args.kind else []
        raise BenchError(f"unknown {kinds_text} {args.name!r}{'; valid: ' + ', '.join(valid) if valid else ''}; "
                         "or module:Object, or --suite FILE with the plug-in in its [plugins.*]")
    if len(kinds) > 1:
        raise BenchError(f"{args.name!r} names entries of several kinds ({', '.join(kinds)}): say which with --kind")
    return kinds[0], args.name, registry.table(kinds[0])[args.name]


def _kind_of(obj, where: str) -> str:
    import inspect

    from algorithms.base import TrainingAlgorithm
    from algorithms.energies import Energy
    from datasets.base import Target
    from metrics.catalogue import Metric

    if isinstance(obj, Metric):
        return "metrics"
    for kind, base in (("algorithms", TrainingAlgorithm), ("targets", Target), ("energies", Energy)):
        if inspect.isclass(obj) and issubclass(obj, base):
            return kind
    raise BenchError(f"{where}: {obj!r} is no algorithm, target, energy or metric (a subclass of "
                     "TrainingAlgorithm, Target or Energy, or a metrics.catalogue.Metric)")


def cmd_test_plugin(args) -> int:
    import tomllib

    from algorithms.base import ConfigError, build_config
    from bench import contracts, registry
    from bench.learning import smoke_test

    if args.iters < 1:
        raise BenchError(f"--iters must be >= 1, got {args.iters}")
    kind, name, obj = _plugin_under_test(args)
    if args.set and kind != "algorithms":
        what = {"targets": "a target", "energies": "an energy", "metrics": "a metric"}[kind]
        raise BenchError(f"--set is for an algorithm's Config; {args.name!r} is {what}")
    if kind == "algorithms":
        overrides = {}
        for item in args.set:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise BenchError(f"--set {item!r}: expected KEY=VALUE")
            try:
                overrides[key] = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                overrides[key] = text
        try:
            build_config(obj.Config, overrides, f"--set ({obj.__name__}.Config)")
        except ConfigError as e:
            raise BenchError(str(e)) from None
        checks = smoke_test(obj, args.iters, **overrides)
    elif kind == "targets":
        checks = contracts.check_target(obj())
    elif kind == "energies":
        checks = contracts.check_energy(obj)
    else:
        checks = contracts.check_metric(obj)
    for check, ok, detail in checks:
        print(f"{'n/a ' if ok is None else 'ok  ' if ok else 'FAIL'}  {check}: {detail}")
    failed = sum(ok is False for _, ok, _ in checks)
    passed = sum(ok is True for _, ok, _ in checks)
    label = getattr(obj, "__name__", None) or f"metric {obj.name}"
    src = registry.origin(kind, name) if name is not None else registry.source_file(obj)
    print(f"{label} ({src}): {passed} of {passed + failed} checks passed"
          + (f", {len(checks) - passed - failed} not applicable" if passed + failed < len(checks) else ""))
    return 1 if failed else 0


def cmd_list(args) -> int:
    import algorithms
    import datasets
    from algorithms.energies import ENERGIES
    from bench.plugins import load_entry_points
    from bench.registry import BUILT_IN, origin
    from bench.suite import available_suites, load_suite

    load_entry_points()
    buf = io.StringIO()
    buf.write("suites:\n")
    for s in available_suites():
        d = load_suite(s)
        buf.write(f"  {s:<16} {d.get('description', '')} (fidelities: {', '.join(d['fidelity'])})\n")
    if args.suite:
        d = load_suite(args.suite)
        buf.write(f"  {d['path']}  {d.get('description', '')} (fidelities: {', '.join(d['fidelity'])})\n")

    def where(kind, n):
        src = origin(kind, n)
        return f"  [{src}]" if src == BUILT_IN else f"  [plug-in: {src}]"

    buf.write("algorithms:\n")
    for n, cls in algorithms.ALGORITHMS.items():
        buf.write(f"  {n:<16} {cls.paper}{where('algorithms', n)}\n")
    buf.write("targets:\n")
    for n, cls in datasets.TARGETS.items():
        t = cls()
        truth = ", ".join(t.capabilities()) or "samples only"
        buf.write(f"  {n:<22} {t.paper}; {truth}{where('targets', n)}\n")
    buf.write("energies:\n")
    for n, cls in ENERGIES.items():
        buf.write(f"  {n:<22} {cls.describe()}{where('energies', n)}\n")
    buf.write("metrics:\n")
    for line in metric_lines(where):
        buf.write(line)
    print(buf.getvalue(), end="")
    return 0


def metric_lines(where=lambda kind, name: "") -> list[str]:
    """One line per registered metric (metrics/catalogue.py): its name, its description, what the gate does with
    it and its headline label, and where it came from."""
    from metrics.catalogue import METRICS

    out = []
    for n, m in METRICS.items():
        notes = []
        if m.gate is not None:
            notes.append(f"gated, {'lower' if m.better < 0 else 'higher'} is better, {m.gate.scale} scale")
        heads = m.headlines()
        if heads:
            notes.append("headline " + ", ".join(heads.values()))
        extra = f" ({'; '.join(notes)})" if notes else ""
        out.append(f"  {n:<24} {m.description}{extra}{where('metrics', n)}\n")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        build_parser().print_help(sys.stderr)
        return 2
    sweeps = argv[0] in ("run", "baseline", "check")  # the commands that save cells as they finish
    try:
        args = build_parser().parse_args(argv)
        commands = {"run": cmd_run, "list": cmd_list, "table": cmd_table, "plot": cmd_plot, "baseline": cmd_baseline,
                    "check": cmd_check, "report": cmd_report, "test-plugin": cmd_test_plugin, "plan": cmd_plan,
                    "reproduction": cmd_reproduction}
        with stop_on_signals():
            return commands[args.command](args)
    except (BenchError, SetupError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder that cannot be written, a lost connection: files are intact
        where = f"{e.filename}: " if e.filename else ""
        print(f"bench: error: {where}{e.strerror or e} (results written so far are intact)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if not isinstance(e, Interrupted):  # Ctrl-C before the handlers were installed
            e = Interrupted(signal.SIGINT)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"bench: {e if e.detail or not sweeps else f'{e} (finished cells are saved)'}", file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
