"""Mid-cell checkpoints: a cell's training state, saved every few minutes while it trains, so that a stopped run
resumes a long cell (hours at a paper's settings) at its last checkpoint instead of at its first iteration.

A checkpoint holds everything a cell's training loop carries from one iteration to the next: the algorithm
(energy, flow, optimiser, persistent chains, adapted step sizes, its own random generators), its work counters,
the batch order, the trace rows so far (and the last steps' scalars, ``bench.runner.RecentSteps``), the random
streams (torch's global ones, or a stacked seed's own), and the time and CPU already spent. Resumed, the cell
goes on exactly as if it had not stopped: the same draws in the same order, so the same numbers
(tests/test_checkpoint.py compares a resumed run with an uninterrupted one, for every algorithm). What a cell
rebuilds from its seed anyway (its target and training set) is not stored: the pickle names them and the resuming
run puts its own in their place.

A checkpoint belongs to one set of cells (their ids) and one code version; any other is not resumed from (the
runner says so and starts the cell afresh): training code that changed between the two halves of a run would make
its rows belong to neither version. It is written atomically (``bench.store.atomic_write_bytes``), so a run killed
while writing leaves the previous checkpoint whole, and removed once the cell's rows are stored.

Pickled with cloudpickle (joblib's and Dask's dependency, pinned in constraints.txt), which also pickles the small
closures some algorithms keep (the tilted energies of algorithms/tilt.py); the standard pickle cannot. A checkpoint
is a pickle: resume only from checkpoints your own runs wrote.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cloudpickle
import torch

from bench.store import atomic_write_bytes

#: minutes between two checkpoints of a training cell, by default (``bench run --checkpoint-every``)
DEFAULT_EVERY_MIN = 10.0
#: the layout of a checkpoint's dict; a checkpoint of another layout is not resumed from
FORMAT = 1
FOLDER = "checkpoints"


class _Pickler(cloudpickle.Pickler):
    """Pickles the cell's state with the objects in ``names`` (by identity) stored as their names only."""

    def __init__(self, f, names: dict[int, str]):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = names

    def persistent_id(self, obj):
        return self._names.get(id(obj))


class _Unpickler(pickle.Unpickler):
    """Puts the resuming run's own objects where the pickle names them."""

    def __init__(self, f, objects: dict[str, object]):
        super().__init__(f)
        self._objects = objects

    def persistent_load(self, pid):
        return self._objects[pid]


def rng_state(dev: torch.device) -> dict:
    """torch's global random streams: the CPU's, and on a GPU the GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    return state


def set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], dev)


@dataclass
class Checkpoint:
    """Where the checkpoint of one unit of a sweep (a cell, or the seeds of a cell trained as one stack) lives and
    how often it is written. ``cell_ids``: the unit's cells, in order; ``every_s``: seconds of training between two
    checkpoints."""

    path: Path
    cell_ids: list[str]
    code_version: str
    every_s: float = DEFAULT_EVERY_MIN * 60
    _last: float = field(default_factory=time.perf_counter, repr=False)
    _failed: bool = field(default=False, repr=False)

    def start(self) -> None:
        """The training starts (or resumes) now: the first checkpoint is due ``every_s`` from here."""
        self._last = time.perf_counter()

    def due(self) -> bool:
        """Whether the next checkpoint is due (``every_s`` since the last one, or since the training started)."""
        return time.perf_counter() - self._last >= self.every_s

    def save(self, state: dict, shared: dict[str, object]) -> None:
        """Write ``state`` (a dict with the training loop's state) atomically; ``shared``: name -> object rebuilt
        by the resuming run (a target, a training set), pickled by name. A checkpoint that cannot be written
        (full disk) is said once on stderr and training goes on: the cell loses only the resumability."""
        buf = io.BytesIO()
        _Pickler(buf, {id(obj): name for name, obj in shared.items()}).dump(
            {"format": FORMAT, "cell_ids": self.cell_ids, "code_version": self.code_version,
             "saved_at": datetime.now(UTC).isoformat(timespec="seconds"), **state})
        try:
            atomic_write_bytes(self.path, buf.getvalue())
        except OSError as e:
            if not self._failed:
                print(f"{self.path}: checkpoint not written ({e.strerror or e}); the cell trains on without one",
                      file=sys.stderr)
            self._failed = True
        self._last = time.perf_counter()

    def load(self, shared: dict[str, object], device: torch.device) -> dict | None:
        """The saved state, with the objects of ``shared`` in place of their names; None if there is no
        checkpoint, or it is not this unit's under this code version on this kind of device (said on stderr: the cell
        starts afresh)."""
        if not self.path.exists():
            return None
        try:
            with open(self.path, "rb") as f:
                state = _Unpickler(f, shared).load()
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint (truncated, another layout) is not used
            return self._ignore(f"unreadable ({type(e).__name__})")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return self._ignore("of another layout")
        if state["cell_ids"] != self.cell_ids:
            return self._ignore(f"of other cells ({', '.join(state['cell_ids'])})")
        if state["code_version"] != self.code_version:
            return self._ignore(f"written by code version {state['code_version']}, this is {self.code_version}")
        for t in _tensors(state):
            if t.device.type != device.type:
                return self._ignore(f"saved on {t.device.type}, this run is on {device.type}")
        return state

    def _ignore(self, why: str) -> None:
        print(f"{self.path}: checkpoint {why}; not resumed from, the cell starts from its first iteration",
              file=sys.stderr)
        return None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _tensors(state: dict):
    """The tensors at the top of the state's parts (the batch order is one on the run's device)."""
    perm = state.get("perm")
    if isinstance(perm, torch.Tensor):
        yield perm
    for seed in state.get("seeds", []):
        if isinstance(seed.get("perm"), torch.Tensor):
            yield seed["perm"]


def checkpoint_for(out: Path, cells, every_s: float) -> Checkpoint:
    """The checkpoint of a sweep's unit ``cells`` in results folder ``out``:
    ``out/checkpoints/<suite>-<fidelity>-<target>-<algorithm>-seed<s>[-<s2>...]-<first cell's id>.ckpt``."""
    ids = [c.cell_id() for c in cells]
    c = cells[0]
    seeds = "-".join(str(x.seed) for x in cells)
    # a variant's name may hold any character ("short_run[h=1/256]"): only a plain file name in the folder
    name = f"{c.suite}-{c.fidelity}-{c.target}-{c.algorithm}-seed{seeds}-{ids[0]}"
    name = re.sub(r"[^A-Za-z0-9._=\[\]-]+", "_", name)
    return Checkpoint(Path(out) / FOLDER / f"{name}.ckpt", ids, c.code_version, every_s)
