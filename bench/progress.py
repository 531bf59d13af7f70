"""Progress of the cells a sweep runs in other processes (``-j N``), shown on the sweep's own bar.

A cell in this process has its own training bar (``bench.runner``). A cell in a local worker process cannot draw
one (several processes writing to one terminal garble it), so it writes its iteration count to a small file instead
(``ProgressFile``, at most once every ``every_s`` seconds, atomically), and the sweep's process reads the files of the
cells in flight (``InFlight``) and shows them after its "cells" bar: which cell, how far, and an estimate of the time
left from the rate seen so far, e.g.

    cells:  0%|   | 0/6 [10:02<?, ?cell/s, in flight: flowmc_ebm/hd_mixture32/s0,1,2 913/58594 (10.5 h left), ...]

Without this a sweep of hour-long cells shows 0/N for hours. The files live in a temporary folder of the sweep's
process, removed when the sweep ends; a file never enters the results folder.

On a Dask cluster (``--backend dask``) the workers may be other machines, which cannot write into the sweep's
folder: there a unit reports through the cluster itself (``DaskProgress``: an event of the worker on a topic of
this sweep, kept by the scheduler), and ``DaskInFlight`` reads the latest event of each unit. The line is the same.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
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


class _Throttled:
    """A unit's reporter, called as ``report(it, total)`` after each training iteration: it passes the iteration on
    (``_send``) when ``every_s`` seconds have passed since it last did, and always at the last iteration.
    Picklable: the sweep makes it, the worker process calls it."""

    def __init__(self, every_s: float = EVERY_S):
        self.every_s, self._last = every_s, float("-inf")

    def __call__(self, it: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and it < total:
            return
        self._last = now
        self._send(int(it), int(total))

    def _send(self, it: int, total: int) -> None:
        raise NotImplementedError


class ProgressFile(_Throttled):
    """A local worker's reporter: writes "it total" to ``path`` (atomically: a reader never sees half a line)."""

    def __init__(self, path: str, every_s: float = EVERY_S):
        super().__init__(every_s)
        self.path = path

    def _send(self, it: int, total: int) -> None:
        # not bench.store.atomic_write_bytes: a display needs no fsync every few seconds, and a worker outliving its
        # sweep must not make the removed folder again
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{it} {total}\n")
            os.replace(tmp, self.path)
        except OSError:  # a full or vanished temporary folder costs the display, never the cell
            pass


class DaskProgress(_Throttled):
    """A Dask worker's reporter: logs ``{"unit": unit, "it": it, "total": total}`` on the sweep's ``topic``
    (``distributed.Worker.log_event``; the scheduler keeps a topic's latest events, ``Client.get_events`` reads
    them)."""

    def __init__(self, topic: str, unit: int, every_s: float = EVERY_S):
        super().__init__(every_s)
        self.topic, self.unit = topic, unit

    def _send(self, it: int, total: int) -> None:
        try:
            from distributed import get_worker

            get_worker().log_event(self.topic, {"unit": self.unit, "it": it, "total": total})
        except Exception:  # outside a worker, or a worker losing its scheduler: the display, never the cell
            pass


def read(path: str | Path) -> tuple[int, int] | None:
    """(iteration, total) from a progress file; None while it is missing or unreadable."""
    try:
        it, total = Path(path).read_text().split()
        return int(it), int(total)
    except (OSError, ValueError):
        return None


class _Units:
    """The line that says where a sweep's running units are (unit i labelled ``labels[i]``), from what their
    reporters (``reporter(i)``) passed on; a context manager. Subclasses say where reports go and how they are
    read back."""

    def __init__(self, labels: list[str], every_s: float | None = None):
        self.labels, self.every_s = labels, EVERY_S if every_s is None else every_s
        self._first: dict[int, tuple[float, int]] = {}  # unit -> (time, iteration) when this sweep first read it
        self._shown = float("-inf")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def reporter(self, i: int):
        raise NotImplementedError

    def _refresh(self) -> None:
        """Fetch what the units have reported since the last line (once per line)."""

    def _read(self, i: int) -> tuple[int, int] | None:
        """Unit i's latest (iteration, total); None before its first report."""
        raise NotImplementedError

    def line(self, running: list[int], now: float | None = None) -> str:
        """'in flight: LABEL IT/TOTAL (T left), ...' for the units ``running`` that have reported; the training
        time left is extrapolated from the iterations seen since this sweep first saw the unit (a resumed unit's
        earlier iterations do not count; the evaluation after training is not included)."""
        now = time.monotonic() if now is None else now
        self._refresh()
        parts = []
        for i in running:
            got = self._read(i)
            if got is None:
                continue
            it, total = got
            t0, it0 = self._first.setdefault(i, (now, it))
            if it < it0:  # the unit started again (a Dask worker lost, its cell rescheduled): its rate anew
                t0, it0 = self._first[i] = (now, it)
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


class InFlight(_Units):
    """The units of a sweep in local worker processes, through progress files in a temporary folder of this
    process, removed on leaving the context. Where no temporary folder can be made (a full or read-only temporary
    directory) the sweep runs without the line."""

    def __init__(self, labels: list[str], every_s: float | None = None):
        super().__init__(labels, every_s)
        try:
            self.folder: Path | None = Path(tempfile.mkdtemp(prefix="bench-progress-"))
        except OSError:
            self.folder = None

    def __exit__(self, *exc):
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, i: int) -> Path:
        return self.folder / f"unit{i}"

    def reporter(self, i: int) -> ProgressFile | None:
        return None if self.folder is None else ProgressFile(str(self._path(i)), self.every_s)

    def _read(self, i: int) -> tuple[int, int] | None:
        return None if self.folder is None else read(self._path(i))


class DaskInFlight(_Units):
    """The units of a sweep on the Dask cluster of ``client``: each reports on a topic of its own sweep (a fresh
    name, so two sweeps on one scheduler do not read each other's units), and the line reads the latest report of
    each unit from the scheduler's events, once per line. The scheduler keeps a bounded number of events per topic:
    nothing is left to remove."""

    def __init__(self, labels: list[str], client, every_s: float | None = None):
        import uuid

        super().__init__(labels, every_s)
        self.client, self.topic = client, f"bench-progress-{uuid.uuid4().hex}"
        self._latest: dict[int, tuple[int, int]] = {}

    def reporter(self, i: int) -> DaskProgress:
        return DaskProgress(self.topic, i, self.every_s)

    def _refresh(self) -> None:
        try:
            events = self.client.get_events(self.topic)
        except Exception:  # a scheduler that does not answer costs the line, not the sweep
            return
        for _, msg in events:  # oldest first: the last one of a unit stays
            self._latest[msg["unit"]] = (msg["it"], msg["total"])

    def _read(self, i: int) -> tuple[int, int] | None:
        return self._latest.get(i)
