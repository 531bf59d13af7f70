"""Command line: ``python -m bench run|list|table|plot``.

Bad input (unknown names, malformed files, invalid values) prints one line, ``bench: error: ...``,
exits with status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from bench._ownpkg import ROOT
from bench.errors import BenchError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise BenchError(message)


def _names(values):
    """Accept both ``--algorithms a b`` and ``--algorithms a,b``."""
    if values is None:
        return None
    return [n for v in values for n in v.split(",") if n]


def default_out(suite: str, fidelity: str) -> Path:
    return ROOT / "results" / f"{suite}-{fidelity}"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    r = sub.add_parser("run", help="train and evaluate every cell of a suite")
    r.add_argument("--suite", required=True)
    r.add_argument("--fidelity", default="quick", help="smoke | quick | paper (default quick)")
    r.add_argument("--algorithms", nargs="+", help="subset of the suite's algorithms")
    r.add_argument("--targets", nargs="+", help="subset of the suite's targets")
    r.add_argument("--seeds", type=int, help="number of seeds (default: the fidelity's)")
    r.add_argument("--out", type=Path, help="results folder (default results/<suite>-<fidelity>)")
    r.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    r.add_argument("-j", "--jobs", type=int, default=0, help="parallel cells (default: one per CPU core)")
    r.add_argument("--no-report", action="store_true", help="skip tables and figures after the run")

    sub.add_parser("list", help="suites, algorithms, targets and metrics")

    for name, helptext in (("table", "print and save the tables of a results folder"),
                           ("plot", "draw the figures of a results folder")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("--results", type=Path, help="results folder (default results/<suite>-<fidelity>)")
        t.add_argument("--suite", default="toy2d")
        t.add_argument("--fidelity", default="quick")
    return p


def check_device(device: str) -> str:
    import torch

    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__})")
        return device
    raise BenchError(f"invalid --device {device!r}; valid: cpu, cuda, cuda:N")


def cmd_run(args) -> int:
    from bench.suite import load_suite, resolve_cells
    from bench.sweep import run_sweep

    suite = load_suite(args.suite)
    cells = resolve_cells(suite, args.fidelity, _names(args.algorithms), _names(args.targets), args.seeds)
    device = check_device(args.device)
    if args.jobs < 0:
        raise BenchError(f"-j must be >= 0, got {args.jobs}")
    out = args.out or default_out(args.suite, args.fidelity)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: exists and is not a folder")
    store = run_sweep(cells, out, device=device, jobs=args.jobs)
    print(f"results: {out / 'results.csv'}")
    if not args.no_report:
        _report(store)
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


def cmd_table(args) -> int:
    from bench.report import write_tables

    print(write_tables(_store(args)))
    return 0


def cmd_plot(args) -> int:
    from bench import plots

    made = plots.make_all(_store(args))
    if not made:
        raise BenchError(f"{args.results}: nothing to plot (no finished cells with artifacts)")
    for f in made:
        print(f"figure: {f}")
    return 0


def cmd_list(args) -> int:
    import algorithms
    import datasets
    from bench.suite import available_suites, load_suite

    buf = io.StringIO()
    buf.write("suites:\n")
    for s in available_suites():
        d = load_suite(s)
        buf.write(f"  {s:<16} {d.get('description', '')} (fidelities: {', '.join(d['fidelity'])})\n")
    buf.write("algorithms:\n")
    for n, cls in algorithms.ALGORITHMS.items():
        buf.write(f"  {n:<16} {cls.paper}\n")
    buf.write("targets:\n")
    for n, cls in datasets.TARGETS.items():
        t = cls()
        truth = "exact density + modes" if t.has_density and t.has_modes else "samples only"
        buf.write(f"  {n:<16} {t.paper}; {truth}\n")
    buf.write("metrics:\n")
    for n, desc in METRICS.items():
        buf.write(f"  {n:<24} {desc}\n")
    print(buf.getvalue(), end="")
    return 0


METRICS = {
    "ebm_weight[k]": "mass of mode k's region under the EBM, grid integration",
    "ebm_weight_mse": "mean over modes of (EBM weight - true weight)^2 (000 Table 3, col. 4)",
    "ebm_weight_relerr[k]": "(EBM weight - true weight) / true weight",
    "neg_weight[k]": "fraction of negative samples in mode k's region",
    "neg_weight_mse": "negative samples' weights vs true weights",
    "neg_weight_mse_vs_ebm": "negative samples' weights vs the EBM's (000 Table 3, col. 3)",
    "init_weight_mse_vs_ebm": "chain initialisations' weights vs the EBM's (000 Table 3, col. 2)",
    "logp_median_sq_error": "median over x ~ p* of (log p_theta - log p*)^2, grid-normalised (000 Table 1)",
    "max_rhat": "max over dims of rank-normalised split R-hat (arviz), chains from the final state",
    "max_rhat_classic": "max over dims of classic Gelman-Rubin R-hat (001)",
    "min_ess_bulk / min_ess_tail": "min over dims of arviz bulk / tail ESS of the same chains",
    "diverged_at": "iteration at which a diverged run stopped",
}


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return {"run": cmd_run, "list": cmd_list, "table": cmd_table, "plot": cmd_plot}[args.command](args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (finished cells are saved)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
