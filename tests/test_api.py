"""The Python API (bench.run / load / table / plot): the same sweep as the CLI, as DataFrames."""

import pandas as pd
import pytest

import bench
from bench.errors import BenchError

SEL = dict(fidelity="smoke", algorithms=["ula_ebm", "cd"], targets=["two_mode"], seeds=2, jobs=1)


def test_run_returns_the_selected_cells_and_load_reads_the_same(tmp_path):
    out = tmp_path / "r"
    res = bench.run("toy2d", out=out, **SEL)
    assert isinstance(res, pd.DataFrame)
    runs = res[["algorithm", "target", "seed"]].drop_duplicates()
    assert sorted(map(tuple, runs.to_numpy().tolist())) == [
        ("cd", "two_mode", 0), ("cd", "two_mode", 1), ("ula_ebm", "two_mode", 0), ("ula_ebm", "two_mode", 1)]
    assert (res["status"] == "ok").all() and res["value"].dtype == float
    loaded = bench.load(out)
    pd.testing.assert_frame_equal(loaded.sort_values(["cell_id", "metric"]).reset_index(drop=True),
                                  res.sort_values(["cell_id", "metric"]).reset_index(drop=True))
    # a second call resumes: nothing re-runs, the same rows come back; a subset selects only its cells
    again = bench.run("toy2d", out=out, **{**SEL, "algorithms": ["cd"]})
    assert set(again["algorithm"]) == {"cd"}
    assert set(again["finished_at"]) <= set(res["finished_at"])
    traces = bench.load(out, "traces")
    assert {"iteration", "metric", "value"} <= set(traces.columns) and len(traces)

    tabs = bench.table(out)
    assert {"key_metrics", "mode_weights", "work", "status", "paired_toy2d"} <= set(tabs)
    w = tabs["mode_weights"]
    assert float(w.loc[("two_mode", "p* (true)"), "w0"]) == pytest.approx(1 / 3, abs=1e-4)  # shown to 4 digits
    assert (out / "tables" / "tables.txt").exists()
    figs = bench.plot(out)
    assert figs and all(f.exists() and f.stat().st_size > 0 for f in figs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(algorithms=["nope"]), "unknown algorithm 'nope' for suite toy2d"),
    (dict(seeds=0), "--seeds must be at least 1"),
    (dict(seeds="2"), "--seeds must be an integer"),
    (dict(device="tpu"), "invalid --device 'tpu'"),
    (dict(jobs=-1), "-j must be >= 0"),
    (dict(budget=float("nan")), "--budget must be a positive number"),
])
def test_bad_input_raises_one_line_and_writes_nothing(tmp_path, kwargs, message):
    with pytest.raises(BenchError, match=message.replace("[", r"\[")) as e:
        bench.run("toy2d", out=tmp_path / "r", **{**SEL, **kwargs})
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()


def test_load_of_a_folder_without_results_is_an_error(tmp_path):
    with pytest.raises(BenchError, match="no results.csv"):
        bench.load(tmp_path)
    with pytest.raises(BenchError, match="valid: results, traces"):
        bench.load(tmp_path, "trace")
