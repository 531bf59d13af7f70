"""bench plan: projections of a sweep's cost against real runs, its counting rules against the runner's, and its
validation against run's."""

import math
import os
import time

import pandas as pd
import pytest

import bench
from bench import planner as plan_mod
from bench.api import resolve
from bench.cli import main
from bench.runner import run_cell, run_stack
from bench.sweep import stamp

#: a projection must land within this factor of the real run's CPU time (CPU time, not wall time: other processes
#: on a loaded machine stretch the wall time of both, and not in the same proportion)
FACTOR = 2.0


@pytest.mark.parametrize("suite, algorithm, target, budget", [
    # training dominates; trace points every 100 iterations, the run stopped by its budget at iteration 261
    ("toy2d", "ula_ebm", "two_mode", 200_000),
    # R-hat along training (every 2nd trace point, 128 chains of 300 steps) and the audit, 257 iterations
    ("highdim", "ula_ebm", "hd_mixture16", 2_200_000),
])
def test_projection_matches_a_real_run(tmp_path, suite, algorithm, target, budget):
    """The planner times a few iterations and short chains; the real run trains to its budget and evaluates at
    full length. Iterations, trace points and R-hat points must be exactly the runner's, the CPU time within
    FACTOR."""
    _, cells, _, _ = resolve(suite, "quick", [algorithm], [target], 1, tmp_path / "unused", budget=budget)
    p = plan_mod.make_plan(cells, progress=False, threads=1, seconds=1.0)  # one torch thread, as the real run
    row = p.configs.iloc[0]
    stamp(cells)
    t0 = time.process_time()
    rows, traces, _ = run_cell(cells[0], threads=1)
    real_cpu = time.process_time() - t0
    traces = pd.DataFrame(traces)
    assert rows[0]["status"] == "ok"
    # the run records its own CPU time (setup included): what the projection is compared with in docs/reproduction.md
    assert rows[0]["cpu_time_s"] == pytest.approx(real_cpu, rel=0.05, abs=0.05)
    assert row["n_iters"] == rows[0]["n_iters"] < cells[0].train.iterations()  # stopped by the budget
    assert row["n_trace"] == traces["iteration"].nunique() >= 3
    assert row["n_rhat"] == traces[traces["metric"] == "max_rhat"]["iteration"].nunique()
    assert row["timed_iters"] >= plan_mod.MIN_TIMED and row["timing_cpu_s"] < real_cpu
    ratio = row["cpu_s"] / real_cpu
    assert 1 / FACTOR < ratio < FACTOR, (row[[f"{k}_s" for k in plan_mod.PHASES]].to_dict(), real_cpu)
    if suite == "highdim":
        assert row["n_rhat"] == 2 and row["audit_s"] > 0 and row["rhat_s"] > 0


def test_stacked_projection_matches_a_real_stacked_run(tmp_path):
    """With stack_seeds the training of a configuration's seeds is timed as they train together: each cell is
    booked its share of the stack's iterations (cheaper than a seed alone: the stack shares each operation's
    fixed cost), the stack is one unit of the schedule, and the total lands within FACTOR of run_stack's CPU time."""
    _, cells, _, _ = resolve("toy2d", "quick", ["ula_ebm"], ["two_mode"], 3, tmp_path / "unused", budget=200_000)
    p = plan_mod.make_plan(cells, progress=False, threads=1, seconds=1.0, stack_seeds=True)
    row = p.configs.iloc[0]
    assert row["cells"] == row["stacked_seeds"] == 3
    assert row["train_s"] == pytest.approx(row["stack_cpu_per_iter_s"] * row["n_iters"] / 3)
    assert row["stack_cpu_per_iter_s"] < 0.8 * 3 * row["cpu_per_iter_s"]  # timed stacked, not three seeds' worth
    assert p.wall_s(idle=True) == pytest.approx(3 * row["cpu_s"])  # one unit: three shares one after the other
    stamp(cells)
    t0 = time.process_time()
    out = run_stack(cells, threads=1)
    real_cpu = time.process_time() - t0
    firsts = [rows[0] for _, (rows, _, _) in out]
    assert all(r["status"] == "ok" and r["stacked_seeds"] == 3 and r["n_iters"] == row["n_iters"] for r in firsts)
    ratio = 3 * row["cpu_s"] / real_cpu
    assert 1 / FACTOR < ratio < FACTOR, (row[[f"{k}_s" for k in plan_mod.PHASES]].to_dict(), real_cpu)


def test_trace_points_as_the_runner_takes_them():
    # every eval_every-th iteration and the last; R-hat at every rhat_every-th of them and at the last one
    assert plan_mod.trace_points(1000, 100, 2) == (10, 5)
    assert plan_mod.trace_points(1050, 100, 2) == (11, 6)
    assert plan_mod.trace_points(1000, 100, 3) == (10, 4)
    assert plan_mod.trace_points(1000, 100, 0) == (10, 0)
    assert plan_mod.trace_points(1000, 100, 2, chains=False) == (10, 0)
    assert plan_mod.trace_points(1000, 0, 2) == (0, 0)


def test_budget_iterations_counts_setup_steps_and_chains():
    # 10 gradient evaluations per step: a budget of 95 is reached after the 10th step
    assert plan_mod.budget_iterations(1000, 95, 0, 10, 0, 0) == 10
    # the setup's 50 come first: 5th step
    assert plan_mod.budget_iterations(1000, 95, 50, 10, 0, 0) == 5
    # R-hat chains at the trace point of iteration 5 add 50: checked after the next step (6)
    assert plan_mod.budget_iterations(1000, 95, 0, 10, 5, 1, 0, 50) == 6
    # a budget spent by the setup alone still runs one iteration; one never reached runs them all
    assert plan_mod.budget_iterations(1000, 10, 20, 10, 0, 0) == 1
    assert plan_mod.budget_iterations(100, 10**9, 0, 10, 10, 1, 0, 50) == 100


def test_projection_arithmetic():
    """project() on a clock with known phase times: 2 warm-up steps of 1 s, 4 timed steps of 0.5 s, one trace
    point of 3 s, one R-hat run of 2 s at a tenth of the chains' length, evaluation 3.5 s (of which 2 s are its
    chains and 1 s the audit at a tenth of its length, timed alone again as the phase "audit") with a tenth of the
    negatives, which take 0.3 s, setup 7 s."""
    from bench.suite import TrainConfig

    clock = plan_mod.PhaseClock()
    clock.n.update(warmup=2, step=4, trace=1, rhat=1, evaluate=1, audit=1, negatives=1)
    times = {"setup": 7.0, "warmup": 2.0, "step": 2.0, "trace": 3.0, "rhat": 2.0, "evaluate": 3.5, "audit": 1.0,
             "negatives": 0.3}
    train = TrainConfig(n_data=100, batch_size=10, n_iters=1000, eval_every=100, rhat_every=2, n_chains=8,
                        n_draws=1000, burn_in=100, audit_chains=8, audit_draws=1000, audit_burn_in=100,
                        n_negatives=1000)
    short = TrainConfig(n_data=100, batch_size=10, n_iters=1000, eval_every=100, rhat_every=1, n_chains=8,
                        n_draws=100, burn_in=10, audit_chains=8, audit_draws=100, audit_burn_in=10, n_negatives=100)
    p = plan_mod.project(clock, times, train, short)
    assert (p.n_iters, p.n_trace, p.n_rhat) == (1000, 10, 5)
    assert p.phases == pytest.approx({"setup": 7.0, "train": 2.0 + 0.5 * 998, "trace": 30.0, "rhat": 5 * 20.0,
                                      "evaluate": 0.5 + 20.0 + 0.3 * 9, "audit": 10.0})
    assert p.total == pytest.approx(7 + 501 + 30 + 100 + 23.2 + 10)
    # gradient evaluations: the setup's, 10 per timed step over 1000 iterations, and each of the 5 R-hat points'
    # chains scaled from the short length (110 steps: 30) to the full one (1100 steps: 300)
    clock.grad.update(setup=50, warmup=20, step=40, rhat=30)
    assert plan_mod.project(clock, times, train, short).grad_evals == pytest.approx(50 + 10 * 1000 + 300 * 5)


def test_a_projection_cut_at_the_time_limit_has_no_evaluation():
    """A run whose training passes the cell's time limit stops there as a timeout, unevaluated: training, trace
    and R-hat time, iterations and gradients cut in proportion (here training 100 s of wall time, limit 50 s)."""
    wall = plan_mod.Projection({"setup": 1.0, "train": 80.0, "trace": 15.0, "rhat": 5.0, "evaluate": 10.0,
                                "audit": 4.0}, 1000, 10, 5, 2000.0)
    cpu = plan_mod.Projection({"setup": 2.0, "train": 160.0, "trace": 30.0, "rhat": 10.0, "evaluate": 20.0,
                               "audit": 8.0}, 1000, 10, 5, 2000.0)
    assert plan_mod.cut_at_timeout(wall, cpu, 200.0) == (wall, cpu)  # within the limit: unchanged
    w, c = plan_mod.cut_at_timeout(wall, cpu, 50.0)
    assert w.phases == {"setup": 1.0, "train": 40.0, "trace": 7.5, "rhat": 2.5, "evaluate": 0.0, "audit": 0.0}
    assert c.phases == {"setup": 2.0, "train": 80.0, "trace": 15.0, "rhat": 5.0, "evaluate": 0.0, "audit": 0.0}
    assert (w.n_iters, w.grad_evals, w.timeout, c.timeout) == (500, 1000.0, True, True)


def test_shortened_chains_keep_the_burn_in_share():
    assert plan_mod.shortened(1000, 200) == (100, 20)
    assert plan_mod.shortened(200, 100) == (plan_mod.MIN_DRAWS, 25)
    assert plan_mod.shortened(8, 2) == (8, 2)  # short chains are timed whole


def test_chain_bytes_and_peak_memory():
    from bench.suite import TrainConfig

    train = TrainConfig(n_data=10, batch_size=10, n_iters=1, n_chains=128, n_draws=1000, burn_in=200)
    short = TrainConfig(n_data=10, batch_size=10, n_iters=1, n_chains=128, n_draws=100, burn_in=20)
    # float32 sampler draws of (1200 - 120) steps and float64 kept draws of (1000 - 100), 128 chains x 16 dims
    assert plan_mod.chain_bytes(train, short, 16) == 128 * 16 * (1080 * 4 + 900 * 8)
    if plan_mod.reset_peak_memory():
        block = bytearray(300 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        high = plan_mod.peak_memory_bytes()
        del block
        assert plan_mod.reset_peak_memory()
        assert plan_mod.peak_memory_bytes() < high - 200 * 2**20


def test_makespan_is_the_pool_schedule():
    assert plan_mod.makespan([3, 3, 3], 1) == 9
    assert plan_mod.makespan([3, 1, 1, 1], 2) == 3
    assert plan_mod.makespan([1, 1, 4], 2) == 5
    assert plan_mod.makespan([], 2) == 0


@pytest.mark.parametrize("argv, match", [
    (["--suite", "toy3d"], "unknown suite 'toy3d'; valid: cifar10, digits, gmm50d, "),
    (["--suite", "toy2d", "--algorithms", "ula_ebm,nope"], "unknown algorithm 'nope' for suite toy2d; valid: ula_ebm"),
    (["--suite", "toy2d", "--targets", "moons"], "unknown target 'moons' for suite toy2d; valid: two_mode, "),
    (["--suite", "toy2d", "--fidelity", "huge"], "unknown fidelity 'huge'"),
    (["--suite", "toy2d", "--seeds", "0"], "--seeds must be at least 1"),
    (["--suite", "toy2d", "--device", "tpu"], "invalid --device 'tpu'"),
    (["--suite", "toy2d", "--budget", "-5"], "--budget must be a positive number"),
    (["--suite", "toy2d", "-j", "-1"], "-j must be >= 0"),
    (["--suite", "toy2d", "--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such folder"),
    (["--suite", "toy2d", "--iters", "0"], "--iters must be an integer >= 1"),
    (["--suite", "toy2d", "--save", "plan.txt"], "--save plan.txt: expected the path of a .csv file"),
])
def test_plan_validates_like_run_and_writes_nothing(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    errors = []
    plan_only = "--iters" in argv or "--save" in argv
    for command in (["plan"],) if plan_only else (["plan"], ["run"]):
        assert main([*command, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bench: error: ") and match in err[0], err
        errors.append(err[0])
    assert len(set(errors)) == 1  # the same line from plan and run
    assert list(tmp_path.iterdir()) == []


def test_plan_prints_the_projection_and_writes_only_what_is_asked(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["plan", "--suite", "toy2d", "--fidelity", "smoke", "--algorithms", "ula_ebm", "cd", "--targets",
            "two_mode", "--seeds", "3", "-j", "2"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "timing" in err  # the progress bar
    assert "toy2d, smoke fidelity, 6 cells in 2 configurations" in out
    assert "total: 6 cells" in out and "CPU-hours" in out and "with -j 2" in out and "peak memory" in out
    assert list(tmp_path.iterdir()) == []  # nothing written: no results folder
    assert main([*argv, "--save", "p.csv"]) == 0
    saved = pd.read_csv(tmp_path / "p.csv")
    assert sorted(saved["algorithm"]) == ["cd", "ula_ebm"] and (saved["cells"] == 3).all()
    assert {"cpu_s", "wall_s", "peak_mem_bytes", "threads", "jobs", "cpu", "code_version"} <= set(saved.columns)
    assert (saved["n_iters"] == 4).all() and (saved["cpu_s"] > 0).all()
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_plan_leaves_out_cells_finished_in_out(capsys, tmp_path):
    out = tmp_path / "r"
    sel = ["--suite", "toy2d", "--fidelity", "smoke", "--algorithms", "cd", "--targets", "two_mode", "rings"]
    assert main(["run", *sel, "--targets", "two_mode", "--out", str(out), "--no-report", "-j", "1"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in out.rglob("*"))
    p = bench.plan("toy2d", "smoke", ["cd"], ["two_mode", "rings"], out=out, progress=False)
    assert p.finished == 1 and list(p.configs["target"]) == ["rings"] and p.cells == 1
    assert "1 cells already finished" in str(p)
    assert sorted(p.name for p in out.rglob("*")) == before
    done = bench.plan("toy2d", "smoke", ["cd"], ["two_mode"], out=out, progress=False)
    assert done.finished == 1 and done.cells == 0 and done.cpu_hours == 0 and "nothing to run" in str(done)


def test_api_plan_bad_arguments(tmp_path):
    from bench.errors import BenchError

    for kwargs, match in ((dict(seconds=math.nan), "--seconds must be a positive number"),
                          (dict(warmup=-1), "--warmup must be an integer >= 0"),
                          (dict(algorithms=["nope"]), "unknown algorithm 'nope'")):
        with pytest.raises(BenchError, match=match):
            bench.plan("toy2d", "smoke", out=tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()
    assert os.path.isdir(tmp_path)


def test_plan_says_which_projections_are_lower_bounds():
    """An algorithm whose iterations cost more later in training than the few timed early (002's adaptive ODE
    solver: 5.8x slower by mid-training in a paper cell) says why, and the plan prints it beside that cell only."""
    p = bench.plan("selfadv2d", "smoke", ["noise_free_ode", "noise_free_euler", "self_adversarial",
                                          "self_adversarial_ode"], ["swiss_roll"], progress=False)
    text = str(p)
    for name, lower_bound in (("noise_free_ode", True), ("self_adversarial_ode", True), ("noise_free_euler", False),
                              ("self_adversarial", False)):
        assert (f"note: {name}/swiss_roll: its adaptive ODE solver takes more steps" in text) == lower_bound, name


def test_coopflow_pre_says_its_flow_starts_learning_late():
    from algorithms.coopflow import CoopFlow, CoopFlowConfig

    assert "after 100 iterations" in CoopFlow.cost_changes(CoopFlowConfig(setting="pre", warmup_iters=100))
    assert CoopFlow.cost_changes(CoopFlowConfig(setting="pre", warmup_iters=0)) == ""
    assert CoopFlow.cost_changes(CoopFlowConfig(setting="t30", warmup_iters=100)) == ""
