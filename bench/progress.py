"""Progress of the cells a sweep runs in other processes (``-j N``), shown on the sweep's own bar.

A cell in this process has its own training bar (``bench.runner``). A cell in a local worker process cannot draw
one (several processes writing to one terminal garble it), so it writes its iteration count to a small file instead
(``ProgressFile``, at most once every ``every_s`` seconds, atomically), and the sweep's process reads the files of the
cells in flight (``InFlight``) and shows them after its "cells" bar: which cell, how far, and an estimate of the time
left from the rate seen so far, e.g.

    cells:  0%|   | 0/6 [10:02<?, ?cell/s, in flight: flowmc_ebm/hd_mixture32/s0,1,2 913/58594 (10.5 h left), ...]

Without this a sweep of hour-long cells shows 0/N for hours. The files live in a temporary folder of the sweep's
process, removed when the sweep ends; a file never enters the results folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: seconds between two writes of a worker's progress, and between two refreshes of the sweep's bar
EVERY_S = 5.0


def fmt_seconds(s: float) -> str:
    """A duration for people: seconds below 100 s, minutes below 100 min, else hours (3 digits); "?" for NaN."""
    if s != s:  # NaN
        return "?"
    if s < 100:
        return f"{s:.3g} s"
    if s < 6000:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


@dataclass
class ProgressFile:
    """Where a worker's unit reports its iteration: ``report(it, total)`` writes "it total" to ``path`` (atomically:
    a reader never sees half a line) when ``every_s`` seconds have passed since its last write, and always at the
    last iteration. Picklable: the sweep makes it, the worker process calls it."""

    path: str
    every_s: float = EVERY_S
    _last: float = field(default=float("-inf"), repr=False)

    def __call__(self, it: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and it < total:
            return
        self._last = now
        # not bench.store.atomic_write_bytes: a display needs no fsync every few seconds, and a worker outliving its
        # sweep must not make the removed folder again
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{int(it)} {int(total)}\n")
            os.replace(tmp, self.path)
        except OSError:  # a full or vanished temporary folder costs the display, never the cell
            pass


def read(path: str | Path) -> tuple[int, int] | None:
    """(iteration, total) from a progress file; None while it is missing or unreadable."""
    try:
        it, total = Path(path).read_text().split()
        return int(it), int(total)
    except (OSError, ValueError):
        return None


class InFlight:
    """The progress files of a sweep's units (unit i: ``reporter(i)``, labelled ``labels[i]``) and the line that
    says where the running ones are. A context manager: the temporary folder is removed on leaving it. Where no
    temporary folder can be made (a full or read-only temporary directory) the sweep runs without the line."""

    def __init__(self, labels: list[str], every_s: float | None = None):
        self.labels, self.every_s = labels, EVERY_S if every_s is None else every_s
        try:
            self.folder: Path | None = Path(tempfile.mkdtemp(prefix="bench-progress-"))
        except OSError:
            self.folder = None
        self._first: dict[int, tuple[float, int]] = {}  # unit -> (time, iteration) when this sweep first read it
        self._shown = float("-inf")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, i: int) -> Path:
        return self.folder / f"unit{i}"

    def reporter(self, i: int) -> ProgressFile | None:
        return None if self.folder is None else ProgressFile(str(self._path(i)), self.every_s)

    def line(self, running: list[int], now: float | None = None) -> str:
        """'in flight: LABEL IT/TOTAL (T left), ...' for the units ``running`` that have reported; the training
        time left is extrapolated from the iterations seen since this sweep first saw the unit (a resumed unit's
        earlier iterations do not count; the evaluation after training is not included)."""
        if self.folder is None:
            return ""
        now = time.monotonic() if now is None else now
        parts = []
        for i in running:
            got = read(self._path(i))
            if got is None:
                continue
            it, total = got
            t0, it0 = self._first.setdefault(i, (now, it))
            left = ""
            if it > it0 and now > t0:
                left = f" ({fmt_seconds((total - it) * (now - t0) / (it - it0))} left)"
            parts.append(f"{self.labels[i]} {it}/{total}{left}")
        return "in flight: " + ", ".join(parts) if parts else ""

    def due(self) -> bool:
        """Whether the bar should be refreshed now (every ``every_s`` seconds)."""
        now = time.monotonic()
        if now - self._shown < self.every_s:
            return False
        self._shown = now
        return True
