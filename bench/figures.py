"""What every figure shares (matplotlib / seaborn, PNG): the curve of a metric over training as the mean and min-max
band over seeds (``curve_frame``, ``draw_band``), one colour per algorithm (``palette``), legends below the panels,
the marking of improper models, and writing the PNG atomically (``save``). The figure modules (bench/plots.py,
plots_highdim.py, plots_images.py, plots_quality.py) import these; none imports another."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench import tables  # noqa: E402
from bench.store import atomic_write_bytes  # noqa: E402

IMPROPER_COLOUR = "#c0392b"


def curve_frame(long: pd.DataFrame, x: str = "iteration", value: str = "value") -> pd.DataFrame:
    """The data behind a curve: per (target, algorithm, x) the mean, min and max over seeds and the number
    of seeds. One line per (target, algorithm); the band spans seeds only."""
    g = long.groupby(["target", "algorithm", x])[value]
    return g.agg(mean="mean", lo="min", hi="max", n_seeds="count").reset_index()


def draw_band(ax, frame: pd.DataFrame, x: str, colours: dict, **line) -> None:
    for algo, d in frame.groupby("algorithm"):
        d = d.sort_values(x)
        ax.plot(d[x], d["mean"], color=colours[algo], label=algo, **line)
        if line.get("ls", "-") == "-":
            ax.fill_between(d[x], d["lo"], d["hi"], color=colours[algo], alpha=0.2, lw=0)


def improper_cells(results: pd.DataFrame | None) -> dict[tuple[str, str], str]:
    """(target, algorithm) -> 'k/n' where k of n seeds' models are improper."""
    if results is None:
        return {}
    imp = tables.improper_seeds(results)
    if imp.empty:
        return {}
    g = imp.groupby(level=["target", "algorithm"]).agg(["sum", "size"])
    return {k: f"{int(r['sum'])}/{int(r['size'])}" for k, r in g.iterrows() if r["sum"] > 0}


def mark_improper(ax, target: str, improper: dict) -> None:
    bad = [f"{a} {k}" for (t, a), k in sorted(improper.items()) if t == target]
    if bad:
        ax.text(0.01, 0.01, "improper: " + ", ".join(bad), transform=ax.transAxes, fontsize=7,
                color=IMPROPER_COLOUR, va="bottom")


def legend_below(fig, colours: dict, extra: list | None = None) -> None:
    handles = [plt.Line2D([], [], color=c, label=a) for a, c in colours.items()] + (extra or [])
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), frameon=False,
               fontsize=8)


def palette(algorithms) -> dict:
    order = sorted(set(algorithms))
    return dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))


def save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["IMPROPER_COLOUR", "curve_frame", "draw_band", "improper_cells", "legend_below", "mark_improper",
           "palette", "save"]
