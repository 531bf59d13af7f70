"""Mid-cell checkpoints (bench/checkpoint.py; ``bench run --checkpoint-every``): a cell stopped after a checkpoint
and resumed from it gives the numbers of the same cell run without a stop, for every algorithm, alone and stacked,
and the sweep resumes a killed run there.

Resumed runs are compared with uninterrupted ones for *bitwise* equality of every metric and trace value: the
resumed run must draw the same random numbers in the same order from the same state (parameters, optimiser
moments, chains, adapted step sizes, batch order, every generator). Any part of the training state left out of the
checkpoint (a generator rebuilt from its seed, an optimiser's moments reset, the batch order redrawn, a step size
back at its initial value) changes the numbers after the resume, which these runs go on long enough to show (the
stop is at iteration 5 of 12, between two trace points, and the trace after it and the final metrics are compared)."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import smoke_suite

from bench import checkpoint as ckpt_mod
from bench import runner as runner_mod
from bench.checkpoint import Checkpoint, checkpoint_for
from bench.runner import Abandoned, run_cell, run_stack
from bench.store import read_table
from bench.suite import load_suite, resolve_cells

ROOT = Path(__file__).resolve().parents[1]
STOP_AT = 5  # the checkpoint is written after iteration 5, the run stopped before iteration 6


def cell_of(suite, algorithm, target=None, seeds=1, n_iters=12, train=None, **algo):
    cells = resolve_cells(load_suite(suite), "smoke", [algorithm], [target] if target else None, seeds)
    return [dataclasses.replace(c, train=dataclasses.replace(c.train, n_iters=n_iters, eval_every=4, **(train or {})),
                                algo=dataclasses.replace(c.algo, **algo), code_version="test") for c in cells]


def stopping_at(k):
    """A ``stop`` that answers true when asked before iteration k + 1 (so after the checkpoint of iteration k)."""
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > k

    return stop


def values(result):
    rows, traces, _ = result
    return ({r["metric"]: r["value"] for r in rows}, [(t["iteration"], t["metric"], t["value"]) for t in traces],
            {k: rows[0][k] for k in ("status", "reason", "n_iters", "grad_evals", "energy_evals")})


def assert_bitwise_same(a, b):
    (m1, t1, o1), (m2, t2, o2) = values(a), values(b)
    assert o1 == o2
    assert m1.keys() == m2.keys()
    for k in m1:
        assert m1[k] == m2[k] or (math.isnan(m1[k]) and math.isnan(m2[k])), (k, m1[k], m2[k])
    assert len(t1) == len(t2)
    for x, y in zip(t1, t2, strict=True):
        assert x[:2] == y[:2] and (x[2] == y[2] or (math.isnan(x[2]) and math.isnan(y[2]))), (x, y)


# every algorithm of the registry, on a target of a suite it runs in (digits: convolutional energies on images;
# PCD there with its learning rate decaying to 1 % as at digits' quick fidelity: the schedule is resumed too)
DECAY = {"lr_final_ratio": 0.01}
CASES = [("toy2d", a, "four_mode", None) for a in
         ("ula_ebm", "cd", "short_run", "flowmc_ebm", "nt_ebm", "nce_ebm", "coopflow", "jarzynski")]
CASES += [("selfadv2d", a, "swiss_roll", None) for a in ("noise_free_euler", "noise_free_ode", "self_adversarial",
                                                         "ode_flow_ml")]
CASES += [("gmm50d", "pcd", None, None), ("digits", "pcd", None, DECAY), ("digits", "jarzynski", None, None)]


@pytest.mark.parametrize("suite,algorithm,target,train", CASES)
def test_a_resumed_cell_gives_the_numbers_of_an_uninterrupted_one(tmp_path, suite, algorithm, target, train, capsys):
    cell = cell_of(suite, algorithm, target, train=train)[0]
    whole = run_cell(cell, threads=1)
    ck = checkpoint_for(tmp_path, [cell], every_s=0)  # a checkpoint after every iteration
    with pytest.raises(Abandoned):
        run_cell(cell, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    assert ck.path.exists()
    resumed = run_cell(cell, threads=1, checkpoint=Checkpoint(ck.path, ck.cell_ids, "test", every_s=1e9))
    assert f"resumed from its checkpoint at iteration {STOP_AT}" in capsys.readouterr().err
    assert_bitwise_same(whole, resumed)
    assert {r["resumed_at"] for r in resumed[0]} == {str(STOP_AT)}
    assert "resumed_at" not in whole[0][0]


def test_the_decay_case_decays(tmp_path):
    """The digits PCD case above resumes a learning rate that has decayed: the checkpoint of iteration 5 holds
    lr0 (1 - 0.99 * 5 / 12), so a resumed run that restarted the decay, or a scheduler that reset the rate to
    lr0, would fail it."""
    cell = cell_of("digits", "pcd", train=DECAY)[0]
    ck = checkpoint_for(tmp_path, [cell], every_s=0)
    with pytest.raises(Abandoned):
        run_cell(cell, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    target, data = runner_mod._target_data(cell, torch.device("cpu"))
    saved = ck.load({"target": target, "data": data}, torch.device("cpu"))
    expected = cell.algo.lr * (1 - 0.99 * STOP_AT / cell.train.n_iters)
    lrs = [g["lr"] for g in saved["alg"].optimizer.param_groups]
    assert lrs == pytest.approx([expected] * len(lrs), rel=1e-12)


@pytest.mark.parametrize("algorithm,algo", [
    ("ula_ebm", {}), ("jarzynski", {"resample_c": 0.0005}),
    ("flowmc_ebm", {"n_steps": 4, "n_local": 1, "subsample": 2, "n_particles": 4, "step_size": 2.0}),
    ("nt_ebm", {"n_steps": 4, "step_size": 1.0, "adapt_factor": 1.1}),
    ("coopflow", {"n_steps": 8, "step_size": 2e-3, "warmup_iters": 3})])
def test_a_resumed_stack_gives_the_numbers_of_an_uninterrupted_one(tmp_path, algorithm, algo):
    cells = cell_of("toy2d", algorithm, "four_mode", seeds=2, **algo)
    whole = run_stack(cells, threads=1)
    ck = checkpoint_for(tmp_path, cells, every_s=0)
    assert ck.path.name == f"toy2d-smoke-four_mode-{algorithm}-seed0-1-{cells[0].cell_id()}.ckpt"
    with pytest.raises(Abandoned):
        run_stack(cells, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    resumed = run_stack(cells, threads=1, checkpoint=ck)
    for (k1, r1), (k2, r2) in zip(whole, resumed, strict=True):
        assert k1 == k2
        assert_bitwise_same(r1, r2)
        assert {r["resumed_at"] for r in r2[0]} == {str(STOP_AT)}


def test_a_seed_that_left_the_stack_before_the_checkpoint_stays_out(tmp_path, monkeypatch):
    """Seed 1 diverges at step 3, before the checkpoint of step 5: the resumed stack goes on with seed 0 alone and
    reports seed 1's outcome as the uninterrupted stack does."""
    from test_stacking import poison

    cells = cell_of("toy2d", "ula_ebm", "four_mode", seeds=2)
    poison(monkeypatch, cells)
    whole = run_stack(cells, threads=1)
    assert [r[0][0]["status"] for _, r in whole] == ["ok", "diverged"]
    ck = checkpoint_for(tmp_path, cells, every_s=0)
    with pytest.raises(Abandoned):
        run_stack(cells, threads=1, stop=stopping_at(8), checkpoint=ck)
    resumed = run_stack(cells, threads=1, checkpoint=ck)
    for (_, r1), (_, r2) in zip(whole, resumed, strict=True):
        assert_bitwise_same(r1, r2)


def test_a_checkpoint_is_a_plain_file_of_the_checkpoints_folder_whatever_the_variant_is_called(tmp_path):
    cell = cell_of("toy2d", "short_run[h=1/256]", "four_mode")[0]
    ck = checkpoint_for(tmp_path, [cell], every_s=0)
    assert ck.path.parent == tmp_path / "checkpoints"
    assert ck.path.name == f"toy2d-smoke-four_mode-short_run[h=1_256]-seed0-{cell.cell_id()}.ckpt"


def test_a_checkpoint_of_other_code_or_cells_is_not_resumed_from(tmp_path, capsys):
    cell, other = cell_of("toy2d", "ula_ebm", "four_mode", seeds=2)
    whole = run_cell(cell, threads=1)
    ck = checkpoint_for(tmp_path, [cell], every_s=0)
    with pytest.raises(Abandoned):
        run_cell(cell, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    newer = Checkpoint(ck.path, ck.cell_ids, "newer", every_s=1e9)
    fresh = run_cell(dataclasses.replace(cell, code_version="newer"), threads=1, checkpoint=newer)
    err = capsys.readouterr().err
    assert "checkpoint written by code version test, this is newer; not resumed from" in err
    assert "resumed_at" not in fresh[0][0]
    assert_bitwise_same(whole, fresh)  # started afresh: the same numbers, from iteration 1
    ck.path.write_bytes(ck.path.read_bytes()[:100])  # truncated
    run_cell(cell, threads=1, checkpoint=Checkpoint(ck.path, ck.cell_ids, "test", every_s=1e9))
    assert "checkpoint unreadable" in capsys.readouterr().err
    with pytest.raises(Abandoned):
        run_cell(cell, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    theirs = Checkpoint(ck.path, [other.cell_id()], "test", every_s=1e9)
    run_cell(other, threads=1, checkpoint=theirs)
    assert f"checkpoint of other cells ({cell.cell_id()})" in capsys.readouterr().err


def test_a_checkpoint_that_cannot_be_written_is_said_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    cell = cell_of("toy2d", "ula_ebm", "four_mode")[0]
    whole = run_cell(cell, threads=1)

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", full)
    ck = checkpoint_for(tmp_path, [cell], every_s=0)
    assert_bitwise_same(whole, run_cell(cell, threads=1, checkpoint=ck))
    err = capsys.readouterr().err
    assert err.count("checkpoint not written (No space left on device)") == 1
    assert not ck.path.exists()


def test_checkpoints_are_written_at_their_interval_only(tmp_path, monkeypatch):
    cell = cell_of("toy2d", "ula_ebm", "four_mode")[0]
    saved = []
    monkeypatch.setattr(Checkpoint, "save", lambda self, state, shared: saved.append(state["it"]))
    run_cell(cell, threads=1, checkpoint=checkpoint_for(tmp_path, [cell], every_s=1e9))
    assert saved == []
    run_cell(cell, threads=1, checkpoint=checkpoint_for(tmp_path, [cell], every_s=0))
    assert saved == list(range(1, 12))  # after every iteration but the last (the cell is then stored)


# --- the sweep: a killed `bench run` resumes its cell where its checkpoint was --------------------------------------



def bench_run(suite, out, *extra, **kw):
    cmd = [sys.executable, "-m", "bench", "run", "--suite", str(suite), "--fidelity", "smoke", "--no-report",
           "-j", "1", "--out", str(out), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def test_a_killed_run_resumes_its_cell_at_its_checkpoint(tmp_path):
    suite = tmp_path / "ckpt.toml"
    suite.write_text(smoke_suite(4000))
    whole = bench_run(suite, tmp_path / "whole", "--checkpoint-every", "0")
    out = tmp_path / "out"
    p = bench_run(suite, out, "--checkpoint-every", "0.001")  # every 0.06 s
    folder = out / "checkpoints"
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(folder.glob("*.ckpt"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    assert not (out / "results.csv").exists()  # killed mid-cell: nothing stored
    again = bench_run(suite, out, "--checkpoint-every", "0.001")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "ula_ebm/four_mode/s0: resumed from its checkpoint at iteration" in err
    assert not list(folder.glob("*")), "the cell's checkpoint is removed once its rows are stored"
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err
    assert not (tmp_path / "whole" / "checkpoints").exists()  # --checkpoint-every 0: none written
    a, b = read_table(tmp_path / "whole" / "results.csv"), read_table(out / "results.csv")
    assert b["resumed_at"].nunique() == 1 and b["resumed_at"].iloc[0].isdigit()  # text, one resume
    resumed_at = int(b["resumed_at"].iloc[0])
    assert 0 < resumed_at < 4000
    assert "resumed_at" not in a.columns
    pd.testing.assert_series_equal(a.set_index("metric")["value"], b.set_index("metric")["value"])
    assert list(pd.read_parquet(out / "results.parquet")["resumed_at"].unique()) == [str(resumed_at)]


def test_a_stopped_run_says_which_cells_resume_from_their_checkpoints(tmp_path):
    suite = tmp_path / "ckpt.toml"
    suite.write_text(smoke_suite(100000))
    out = tmp_path / "out"
    p = bench_run(suite, out, "--checkpoint-every", "0.001")
    deadline = time.monotonic() + 120
    while not any((out / "checkpoints").glob("*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143
    assert err.strip().splitlines()[-1].endswith(
        "0 of 1 cells saved in " + str(out) + "; the other 1 run on resume (the same command again); cells in "
        "flight were abandoned, 1 of them resume from their checkpoints (saved every 0.001 min)"), err


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "ten"])
def test_a_bad_checkpoint_interval_is_one_line_before_anything_runs(tmp_path, bad):
    suite = tmp_path / "ckpt.toml"
    suite.write_text(smoke_suite(4))
    p = bench_run(suite, tmp_path / "out", "--checkpoint-every", bad)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert len(err.strip().splitlines()) == 1 and "--checkpoint-every" in err, err
    assert not (tmp_path / "out").exists()


def test_force_starts_a_checkpointed_cell_afresh(tmp_path):
    from bench.sweep import run_sweep, stamp

    cell = cell_of("toy2d", "ula_ebm", "four_mode")[0]
    stamp([cell])  # the code version the sweep gives it: its checkpoint would be resumed from without --force
    ck = checkpoint_for(tmp_path, [cell], every_s=0)
    with pytest.raises(Abandoned):
        run_cell(cell, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    assert ck.path.exists()
    store = run_sweep([cell], tmp_path, jobs=1, force=True, checkpoint_every_s=1e9)
    assert "resumed_at" not in store.results().columns
    assert not ck.path.exists()


def test_resumed_at_stays_text_in_the_stored_tables(tmp_path):
    """"5" and "4000 9000" side by side with runs never stopped: the CSV reads back text (not 5.0, which a later
    merge would write as "5.0" or fail to type for Parquet), the Parquet column is a string column."""
    import pyarrow.parquet as pq

    from bench.store import ResultStore

    store = ResultStore(tmp_path)
    key = {"suite": "s", "target": "t", "algorithm": "a", "fidelity": "f"}
    for seed, extra in ((0, {"resumed_at": "5"}), (1, {}), (2, {"resumed_at": "4000 9000"})):
        cell = {**key, "seed": seed}
        store.add([{**cell, "metric": "m", "value": 1.0, "status": "ok", **extra}], [], {}, cell)
    got = read_table(tmp_path / "results.csv").set_index("seed")["resumed_at"]
    assert got[0] == "5" and pd.isna(got[1]) and got[2] == "4000 9000"
    assert str(pq.read_schema(tmp_path / "results.parquet").field("resumed_at").type) == "string"
    back = list(pd.read_parquet(tmp_path / "results.parquet")["resumed_at"])
    assert back[0] == "5" and pd.isna(back[1]) and back[2] == "4000 9000"


def test_identifiers_that_look_like_numbers_stay_text_in_the_stored_tables(tmp_path):
    """A code version or cell id is hexadecimal: "276357e72495" (a real commit of this project) is the float
    276357e72495 = inf to pandas, "1234567890123456" an integer, "0012345678abcdef" text but "0012345678901234" an
    integer that loses its zeros. Through two merges (each reads the table back) they stay the text written; a
    reader that inferred their types wrote "inf" for the code version on the second merge."""
    import pyarrow.parquet as pq

    from bench.store import ResultStore

    store = ResultStore(tmp_path)
    key = {"suite": "toy2d", "target": "two_mode", "algorithm": "pcd", "fidelity": "quick"}
    ids = {0: ("276357e72495", "1234567890123456"), 1: ("123456789012", "0012345678901234"),
           2: ("1e5", "1434a34b69110ccf")}
    for seed, (version, cell_id) in ids.items():
        cell = {**key, "seed": seed}
        store.add([{**cell, "metric": "m", "value": 1.0, "status": "ok", "code_version": version,
                    "cell_id": cell_id, "target_version": "1"}],
                  [{**cell, "iteration": 1, "metric": "m", "value": 0.0}], {}, cell)
    got = read_table(tmp_path / "results.csv").set_index("seed")
    back = pd.read_parquet(tmp_path / "results.parquet").set_index("seed")
    for seed, (version, cell_id) in ids.items():
        assert got.loc[seed, "code_version"] == version and back.loc[seed, "code_version"] == version
        assert got.loc[seed, "cell_id"] == cell_id and back.loc[seed, "cell_id"] == cell_id
    assert set(got["target_version"]) == {"1"}
    assert str(pq.read_schema(tmp_path / "results.parquet").field("code_version").type) == "string"
    # a finished cell is found by its id and code version (what a resumed sweep skips, or reruns on other code)
    assert store.finished() == {cell_id: version for version, cell_id in ids.values()}
