"""A diverged run's traces show its last iterations (bench/runner.py ``RecentSteps``): the step scalars of every
``eval_every // 10``-th iteration (at most the last 10 of them, trace points excepted) and of the last step that
returned, written only when the run diverges, alone and stacked alike, and carried through a checkpoint.

Which wrong implementation would still pass: one that keeps the first points instead of the last (the unit case
runs past 10 kept points), writes them for runs that did not diverge (the sound seed's traces are checked), writes
a trace point's iteration twice, loses them across a resume (the divergence comes after the checkpoint, so only
the points before it would be missing), or drops the diverging iteration's own scalars when its loss exploded."""

import pytest
from test_checkpoint import STOP_AT, assert_bitwise_same, cell_of, stopping_at
from test_stacking import assert_same_run, poison

import algorithms
from bench.checkpoint import Checkpoint, checkpoint_for
from bench.runner import Abandoned, RecentSteps, run_cell, run_stack

KEY = {"suite": "s", "target": "t", "algorithm": "a", "fidelity": "f", "seed": 0}


def step_iterations(traces):
    """The iterations of the rows that are not regular trace points (those have more than the step's scalars)."""
    full = {t["iteration"] for t in traces if t["metric"] == "energy_spread"}
    return sorted({t["iteration"] for t in traces} - full)


def test_the_last_ten_strided_points_and_the_last_step_are_kept():
    rec = RecentSteps(eval_every=100)  # stride 10; 100 and 200 are trace points
    for it in range(1, 258):
        rec.note(it, grad_evals=3 * it, logs={"loss": float(it), "step_size": 0.5})
    rows = rec.rows(KEY, 258)
    its = sorted({r["iteration"] for r in rows})
    assert its == [150, 160, 170, 180, 190, 210, 220, 230, 240, 250, 257]
    assert len(rows) == 2 * len(its)
    r = next(r for r in rows if r["iteration"] == 257 and r["metric"] == "loss")
    assert r == {**KEY, "iteration": 257, "grad_evals": 771, "metric": "loss", "value": 257.0}


def test_small_or_no_trace_interval_keeps_every_iteration_but_trace_points():
    rec = RecentSteps(eval_every=4)  # stride 1
    for it in range(1, 13):
        rec.note(it, 0, {"loss": 1.0, "what": "text is not a trace value"})
    assert sorted({r["iteration"] for r in rec.rows(KEY, 13)}) == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert {r["metric"] for r in rec.rows(KEY, 13)} == {"loss"}
    rec = RecentSteps(eval_every=0)
    for it in range(1, 4):
        rec.note(it, 0, {"loss": 1.0})
    assert sorted({r["iteration"] for r in rec.rows(KEY, 4)}) == [1, 2, 3]
    assert RecentSteps(eval_every=10).rows(KEY, 1) == []  # diverged at its first step: nothing returned


def test_a_diverged_seed_has_its_last_steps_alone_and_stacked_and_a_sound_one_none(monkeypatch):
    cells = cell_of("toy2d", "ula_ebm", "four_mode", seeds=2)  # eval_every 4, 12 iterations
    poison(monkeypatch, cells, 1, at=7)  # seed 1's step 7 raises: its step scalars end at 6
    alone = [run_cell(c, threads=1) for c in cells]
    stacked = run_stack(cells, threads=1)
    assert [a[0][0]["status"] for a in alone] == ["ok", "diverged"]
    assert step_iterations(alone[1][1]) == [1, 2, 3, 5, 6]
    assert step_iterations(alone[0][1]) == []  # a sound run writes none
    for a, (_, s) in zip(alone, stacked, strict=True):
        assert_same_run(a, s)
    # the step rows hold what the step logged: ULA-EBM's loss and energies, at that iteration's work
    rows6 = {t["metric"]: t for t in alone[1][1] if t["iteration"] == 6}
    assert set(rows6) == {"loss", "energy_pos", "energy_neg"}
    assert rows6["loss"]["value"] == pytest.approx(rows6["energy_pos"]["value"] - rows6["energy_neg"]["value"])
    assert rows6["loss"]["grad_evals"] > next(t["grad_evals"] for t in alone[1][1] if t["iteration"] == 5)


class Explodes(algorithms.ALGORITHMS["ula_ebm"]):
    """ULA-EBM whose step reports a loss past the divergence threshold at iteration ``AT`` (the step returns)."""

    AT = 6

    def step(self, x_pos):
        logs = super().step(x_pos)
        return {**logs, "loss": 5e12} if self._it == self.AT else logs


@pytest.mark.parametrize("at, expected", [(6, [1, 2, 3, 5, 6]), (8, [1, 2, 3, 5, 6, 7, 8])])
def test_an_exploded_loss_keeps_the_diverging_iterations_own_scalars(monkeypatch, at, expected):
    """Also when the loss explodes at a trace point's iteration (8: eval_every 4), whose trace is never taken."""
    monkeypatch.setitem(algorithms.ALGORITHMS, "ula_ebm", Explodes)
    monkeypatch.setattr(Explodes, "AT", at)
    cell = cell_of("toy2d", "ula_ebm", "four_mode")[0]
    rows, traces, _ = run_cell(cell, threads=1)
    assert rows[0]["status"] == "diverged" and rows[0]["reason"] == f"step {at}: loss 5e+12"
    assert step_iterations(traces) == expected
    assert [t["value"] for t in traces if t["iteration"] == at and t["metric"] == "loss"] == [5e12]


def test_a_run_that_diverges_after_its_checkpoint_writes_the_same_last_steps(tmp_path, monkeypatch):
    cell = cell_of("toy2d", "ula_ebm", "four_mode")[0]
    poison(monkeypatch, [cell], 0, at=9)  # after the checkpoint of iteration 5
    whole = run_cell(cell, threads=1)
    assert step_iterations(whole[1]) == [1, 2, 3, 5, 6, 7]  # 1-3 and 5 come from before the checkpoint
    ck = checkpoint_for(tmp_path, [cell], every_s=0)
    with pytest.raises(Abandoned):
        run_cell(cell, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    resumed = run_cell(cell, threads=1, checkpoint=Checkpoint(ck.path, ck.cell_ids, "test", every_s=1e9))
    assert_bitwise_same(whole, resumed)


def test_a_stack_that_diverges_after_its_checkpoint_writes_the_same_last_steps(tmp_path, monkeypatch):
    cells = cell_of("toy2d", "ula_ebm", "four_mode", seeds=2)
    poison(monkeypatch, cells, 1, at=9)
    whole = run_stack(cells, threads=1)
    assert step_iterations(whole[1][1][1]) == [1, 2, 3, 5, 6, 7]
    ck = checkpoint_for(tmp_path, cells, every_s=0)
    with pytest.raises(Abandoned):
        run_stack(cells, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    resumed = run_stack(cells, threads=1, checkpoint=ck)
    for (_, r1), (_, r2) in zip(whole, resumed, strict=True):
        assert_bitwise_same(r1, r2)


def test_a_checkpoint_written_before_recent_steps_still_resumes(tmp_path, monkeypatch):
    """Checkpoints of code before ``RecentSteps`` lack it: the resumed run starts an empty one."""
    cell = cell_of("toy2d", "ula_ebm", "four_mode")[0]
    poison(monkeypatch, [cell], 0, at=9)
    ck = checkpoint_for(tmp_path, [cell], every_s=0)
    with pytest.raises(Abandoned):
        run_cell(cell, threads=1, stop=stopping_at(STOP_AT), checkpoint=ck)
    real_load = Checkpoint.load

    def old_layout(self, *a, **k):
        saved = real_load(self, *a, **k)
        saved.pop("recent", None)
        return saved

    monkeypatch.setattr(Checkpoint, "load", old_layout)
    rows, traces, _ = run_cell(cell, threads=1, checkpoint=Checkpoint(ck.path, ck.cell_ids, "test", every_s=1e9))
    assert rows[0]["status"] == "diverged"
    assert step_iterations(traces) == [6, 7]
