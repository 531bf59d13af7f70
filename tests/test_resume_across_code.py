"""Resuming a sweep from result rows made by another code version (committed paper runs, resumed in a later
session): only on request, matching everything but the code version; tables say when they mix code versions; a
folder of committed tables (no cell artifacts) still gives its tables and says which figures it cannot draw."""

import dataclasses
import json
import shutil

import pandas as pd
import pytest

import bench
from bench import sweep
from bench.cli import main
from bench.store import KEY

SEL = dict(fidelity="smoke", algorithms=["cd"], targets=["two_mode"], seeds=2, jobs=1)


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    """Two cells finished under code version 'old-commit', then the code moves on to 'new-commit'."""
    out = tmp_path / "r"
    monkeypatch.setattr(sweep, "code_version", lambda: "old-commit")
    old = bench.run("toy2d", out=out, **SEL)
    monkeypatch.setattr(sweep, "code_version", lambda: "new-commit")
    return out, old


def test_default_is_strict_and_says_what_reruns(old_run, capsys):
    out, old = old_run
    capsys.readouterr()
    new = bench.run("toy2d", out=out, **SEL)
    msg = capsys.readouterr().out
    assert "2 of 2 cells finished in" in msg and "under other code versions run again" in msg
    assert set(new["code_version"]) == {"new-commit"} and set(new["cell_id"]).isdisjoint(old["cell_id"])
    rows = pd.read_csv(out / "results.csv")
    assert len(rows.drop_duplicates(KEY)) == 2 and set(rows["code_version"]) == {"new-commit"}  # replaced


def test_resume_across_code_keeps_the_rows_and_their_code_version(old_run, capsys):
    out, old = old_run
    capsys.readouterr()
    again = bench.run("toy2d", out=out, resume_across_code=True, **SEL)
    msg = capsys.readouterr().out
    assert "2 of 2 cells already finished" in msg and "2 of them under other code versions" in msg
    pd.testing.assert_frame_equal(again.sort_values(["cell_id", "metric"]).reset_index(drop=True),
                                  old.sort_values(["cell_id", "metric"]).reset_index(drop=True))
    # a third seed is new: it runs under the new code, the two old ones stay; the tables say they mix
    more = bench.run("toy2d", out=out, resume_across_code=True, **{**SEL, "seeds": 3})
    runs = more.drop_duplicates(KEY).set_index("seed")["code_version"]
    assert runs.to_dict() == {0: "old-commit", 1: "old-commit", 2: "new-commit"}
    tabs = bench.table(out, save=False)
    cv = tabs["code_versions"].reset_index()
    assert sorted(zip(cv["code_version"], cv["seeds"], strict=True)) == [("new-commit", "2"), ("old-commit", "0 1")]
    assert any("MIXED CODE VERSIONS" in n and "new-commit, old-commit" in n
               for n in tabs["key_metrics"].attrs["notes"])


def test_across_code_still_reruns_a_changed_config(old_run):
    out, old = old_run
    res = bench.run("toy2d", out=out, resume_across_code=True, budget=100_000, **SEL)
    assert set(res["code_version"]) == {"new-commit"}  # another config: not a finished cell, under any code


def test_the_cli_flag(old_run, capsys):
    out, _ = old_run
    argv = ["run", "--suite", "toy2d", "--fidelity", "smoke", "--algorithms", "cd", "--targets", "two_mode",
            "--seeds", "2", "-j", "1", "--no-report", "--out", str(out)]
    capsys.readouterr()
    assert main([*argv, "--resume-across-code"]) == 0
    assert "2 of 2 cells already finished" in capsys.readouterr().out
    assert set(pd.read_csv(out / "results.csv")["code_version"]) == {"old-commit"}


def test_committed_tables_without_artifacts(tmp_path, capsys):
    """What git keeps of a run (results.csv, traces.csv, no cells/*.npz): the tables are the same as with the
    artifacts; the figures that need artifacts are left out with a warning naming what is missing."""
    out = tmp_path / "full"
    bench.run("toy2d", out=out, **{**SEL, "algorithms": ["cd", "ula_ebm"]})
    committed = tmp_path / "committed"
    committed.mkdir()
    for name in ("results.csv", "traces.csv", "results.parquet", "traces.parquet"):
        shutil.copy(out / name, committed / name)
    full = bench.table(out, save=False)
    kept = bench.table(committed, save=False)
    assert set(full) == set(kept)
    for name in full:
        pd.testing.assert_frame_equal(full[name], kept[name])
    capsys.readouterr()
    figs = bench.plot(committed)
    err = capsys.readouterr().err
    assert "4 finished runs have no cell artifact" in err and "densities" in err
    assert {f.name for f in figs} >= {"weights_over_training.png"} and "densities.png" not in {f.name for f in figs}
    capsys.readouterr()
    bench.plot(out)
    assert "no cell artifact" not in capsys.readouterr().err



def _a_setting_at_its_default(cell):
    """The name of one setting of this cell's config that holds its dataclass default."""
    for f in dataclasses.fields(cell.train):
        if f.default is not dataclasses.MISSING and getattr(cell.train, f.name) == f.default \
                and isinstance(f.default, float):
            return f.name
    raise AssertionError("no float setting at its default")


def test_a_setting_added_at_its_default_still_resumes_and_a_changed_one_reruns(tmp_path, monkeypatch, capsys):
    """Rows written by code that lacked a setting are the same cell when the setting is at its default (what
    the older code did without it), and another cell (run again) when it is not."""
    from bench.suite import Cell, load_suite, resolve_cells

    cell = resolve_cells(load_suite("toy2d"), "smoke", ["cd"], ["two_mode"], seeds=1)[0]
    name = _a_setting_at_its_default(cell)
    config = Cell.config
    out = tmp_path / "r"
    # the old code: no such setting (its config lacks the key), code version 'old-commit'
    monkeypatch.setattr(sweep, "code_version", lambda: "old-commit")
    monkeypatch.setattr(Cell, "config", lambda self: {k: v for k, v in config(self).items() if k != name})
    old = bench.run("toy2d", out=out, **SEL)
    assert name not in json.loads(old["config"].iloc[0])
    # today's code has the setting, at its default: the old rows count as finished
    monkeypatch.setattr(sweep, "code_version", lambda: "new-commit")
    monkeypatch.setattr(Cell, "config", config)
    assert cell.config_as_of(json.loads(old["config"].iloc[0]).keys()) is not None
    capsys.readouterr()
    again = bench.run("toy2d", out=out, resume_across_code=True, **SEL)
    assert "2 of 2 cells already finished" in capsys.readouterr().out
    assert set(again["cell_id"]) == set(old["cell_id"]) and set(again["code_version"]) == {"old-commit"}
    # with the setting away from its default they are another cell
    monkeypatch.setattr(Cell, "config", lambda self: {**config(self), name: getattr(self.train, name) * 2 + 1})
    assert cell.config_as_of(json.loads(old["config"].iloc[0]).keys()) is None
    rerun = bench.run("toy2d", out=out, resume_across_code=True, **SEL)
    assert set(rerun["code_version"]) == {"new-commit"}
