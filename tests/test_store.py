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
