"""Results are written atomically: a failure while writing leaves the previous file intact."""

import os

import pandas as pd
import pytest

from bench import store as store_mod
from bench.store import ResultStore, atomic_write_csv


def rows(seed, value):
    key = {"suite": "s", "target": "two_mode", "algorithm": "a", "fidelity": "quick", "seed": seed}
    return [{**key, "metric": "m", "value": value, "status": "ok"}], key


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.csv"
    atomic_write_csv(path, pd.DataFrame({"a": [1, 2]}))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_csv(path, pd.DataFrame({"a": [3, 4, 5]}))
    assert pd.read_csv(path)["a"].tolist() == [1, 2]
    assert os.listdir(tmp_path) == ["x.csv"]  # no temporary file left behind


def test_store_merges_cells(tmp_path):
    st = ResultStore(tmp_path)
    r0, k0 = rows(0, 1.0)
    r1, k1 = rows(1, 2.0)
    st.add(r0, [], {}, k0)
    st.add(r1, [], {}, k1)
    st.add(rows(0, 5.0)[0], [], {}, k0)  # a re-run of seed 0 replaces its rows
    res = st.results().sort_values("seed")
    assert res["value"].tolist() == [5.0, 2.0]


def test_stale_temporaries_of_a_dead_writer_are_removed_live_ones_kept(tmp_path):
    """A killed writer leaves ``.<name>.<pid>.<random>.tmp``; opening the store removes it only if that pid
    no longer runs (a live writer's temporary must survive, or its rename would fail)."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "cells").mkdir()
    stale = tmp_path / f".results.csv.{dead.pid}.abc123.tmp"
    stale_deep = tmp_path / "cells" / f".x.npz.{dead.pid}.k9_z.tmp"
    live = tmp_path / f".traces.csv.{os.getpid()}.q1w2e3.tmp"
    foreign = tmp_path / ".notes.tmp"  # not ours: no pid field
    for f in (stale, stale_deep, live, foreign):
        f.write_bytes(b"half")
    ResultStore(tmp_path)
    assert not stale.exists() and not stale_deep.exists()
    assert live.exists() and foreign.exists()


def test_atomic_write_names_its_temporary_with_the_writer_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(store_mod.os, "replace", spy)
    atomic_write_csv(tmp_path / "r.csv", pd.DataFrame({"a": [1]}))
    assert seen and seen[0].startswith(f".r.csv.{os.getpid()}.") and seen[0].endswith(".tmp")
