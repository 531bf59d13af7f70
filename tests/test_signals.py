"""Stopping a sweep: SIGINT (Ctrl-C), SIGTERM and SIGHUP, sent to the sweep's process alone or to its whole process
group while cells are mid-training, with -j 1, -j 2 and Dask. Each stops the sweep within seconds, with exit status
128 + the signal's number and one line saying what is saved; the results folder holds the finished cells only (no
temporaries), no process of the sweep survives, a Dask cluster's workers are free again, and the same command
resumes and completes the sweep.

The cells are real sweeps of a suite file in a temporary folder: a plug-in CD that, while the file ``hold`` beside
it names its target, waits 0.2 s per iteration (100 iterations: 20 s, far more than the test needs), and marks
that it has started training in ``started/``. Without ``hold`` the same cells take a fraction of a second, so
the resume is quick."""

import fcntl
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time

import pandas as pd
import pytest

from bench.store import KEY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("signals_as_from_a_terminal")

HELD_CD = '''
"""CD that marks its start in started/ and, while the file hold beside this module names its target, waits 0.2 s
per iteration, so that its cell is still training when the test's signal arrives."""
import os
import time
from pathlib import Path

from algorithms.cd import CD

HERE = Path(__file__).resolve().parent


class HeldCD(CD):
    name = "held_cd"
    paper = "a test"

    def step(self, x_pos):
        logs = super().step(x_pos)
        target = self.problem.target.name
        hold = HERE / "hold"
        if hold.exists() and target in hold.read_text().split():
            (HERE / "started").mkdir(exist_ok=True)
            (HERE / "started" / f"{target}-{os.getpid()}").touch()
            time.sleep(0.2)
        return logs
'''

# 4 targets x 3 seeds: the two_mode cells (5 iterations, never held) finish at once; the 9 others are held. With
# two workers loky has 2 cells running, 5 queued and 2 not yet queued when the signal arrives
SUITE = """
targets = ["two_mode", "four_mode", "eight_gaussians", "rings"]
algorithms = ["held_cd"]
[plugins.algorithms]
held_cd = "held_cd:HeldCD"
[fidelity.smoke]
seeds = 3
[fidelity.smoke.defaults]
n_data = 256
batch_size = 32
n_iters = 100
eval_every = 100
eval_grid = 20
trace_grid = 10
n_eval_samples = 200
n_chains = 2
n_draws = 4
n_negatives = 32
n_steps = 1
[fidelity.smoke.targets.two_mode]
n_iters = 5
"""
HELD = ["four_mode", "eight_gaussians", "rings"]
N_CELLS, N_QUICK = 12, 3
#: a correctness bound against hangs (the machine may be loaded), not a speed target
EXIT_BOUND_S = 20
# to the sweep's process ("main") or its process group. With -j 2 each signal goes both ways (SIGTERM to the process
# in test_the_python_api_raises_interrupted, SIGHUP to the group from a closed terminal in test_closed_terminal);
# with -j 1 and Dask the sweep is one process and its group that process alone: Ctrl-C as a terminal sends it, and
# one other signal. Each sweep's start costs seconds (torch, a pool), which keeps the list short
STOPS = {1: [(signal.SIGINT, "group"), (signal.SIGTERM, "main")],
         2: [(signal.SIGINT, "group"), (signal.SIGINT, "main"), (signal.SIGTERM, "group"), (signal.SIGHUP, "main")],
         "dask": [(signal.SIGINT, "group"), (signal.SIGHUP, "main")]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held")
    (folder / "held_cd.py").write_text(HELD_CD)
    (folder / "held.toml").write_text(SUITE)
    return folder


def command(project, out, backend_args):
    return [sys.executable, "-m", "bench", "run", "--suite", str(project / "held.toml"), "--fidelity", "smoke",
            "--no-report", "--out", str(out), *backend_args]


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command) of the live processes of session ``sid`` (the sweep is started as a session leader, so
    this is it and everything it started, whoever their parent is now)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append((int(d), cmd[:120]))
    return found


def wait_until(condition, timeout_s, proc=None, what=""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (status {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"not within {timeout_s} s: {what}")


def in_flight(project) -> set[str]:
    started = project / "started"
    return {p.name for p in started.iterdir()} if started.is_dir() else set()


def message_lines(err: str) -> list[str]:
    """stderr without its progress bars (tqdm redraws them with carriage returns and cursor moves)."""
    lines = (re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s).strip() for s in re.split(r"[\r\n]", err))
    return [s for s in lines if s and not re.match(r"(cells|held_cd/\w+/s\d+):", s)]


def kill_all(sid: int) -> None:
    for pid, _ in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_a_sweep(project, out, backend_args, n_flight, sig, to, tmp_path, nohup=False, after_signal=None):
    """Start the sweep, wait until ``n_flight`` held cells train, send ``sig`` to its process (``to`` "main") or
    its process group, call ``after_signal``; returns the exit status, when the signal was sent (time.monotonic),
    the seconds to exit, stderr, stdout and what ``after_signal`` returned. ``nohup``: the sweep starts with
    SIGHUP ignored, and a SIGHUP sent first must not stop it."""
    (project / "hold").write_text(" ".join(HELD))
    shutil.rmtree(project / "started", ignore_errors=True)
    err_path, out_path = tmp_path / "err.txt", tmp_path / "out.txt"
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN) if nohup else None
    try:
        with open(err_path, "w") as err, open(out_path, "w") as stdout:
            proc = subprocess.Popen(command(project, out, backend_args), cwd=ROOT, stdout=stdout, stderr=err,
                                    start_new_session=True)
    finally:
        if nohup:
            signal.signal(signal.SIGHUP, hup)
    try:
        wait_until(lambda: len(in_flight(project)) >= n_flight, 300, proc, f"{n_flight} cells were training")
        if nohup:
            os.kill(proc.pid, signal.SIGHUP)
            shutil.rmtree(project / "started")
            wait_until(lambda: len(in_flight(project)) >= n_flight, 30, proc, "the cells went on after SIGHUP")
        if "-j" in backend_args and n_flight > 1:
            assert len(session_processes(proc.pid)) > n_flight  # the workers (and loky's resource tracker)
        else:
            assert [pid for pid, _ in session_processes(proc.pid)] == [proc.pid]  # the group is the sweep alone
        t0 = time.monotonic()
        (os.killpg if to == "group" else os.kill)(proc.pid, sig)
        after = after_signal() if after_signal else None
        try:
            status = proc.wait(timeout=EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{sig.name} to the {to}: no exit within {EXIT_BOUND_S} s; stderr: "
                        f"{err_path.read_text()[-2000:]}")
        seconds = time.monotonic() - t0
        # loky's resource tracker ends on its own once the sweep's process and its workers are gone
        deadline = time.monotonic() + 10
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = session_processes(proc.pid)
        assert not left, f"{sig.name} to the {to}: processes of the sweep still alive: {left}"
    finally:
        kill_all(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, t0, seconds, err_path.read_text(), out_path.read_text(), after


def check_stopped(project, out, backend_args, n_flight, sig, to, tmp_path, first, nohup=False, after_signal=None):
    """Stop a sweep (``stop_a_sweep``) and check its status, its one line, its results folder; returns when the
    signal was sent and what ``after_signal`` returned."""
    status, sent, _, err, stdout, after = stop_a_sweep(project, out, backend_args, n_flight, sig, to, tmp_path,
                                                       nohup, after_signal)
    where = f"{sig.name} to the {to} ({' '.join(backend_args)})"
    assert status == 128 + sig, f"{where}: status {status}; stderr: {err[-2000:]}"
    assert "Traceback" not in err and "Error" not in err, f"{where}: {err[-3000:]}"
    assert message_lines(err) == [
        f"bench: interrupted by {sig.name}: {N_QUICK} of {N_CELLS} cells saved in {out}; the other "
        f"{N_CELLS - N_QUICK} run on resume (the same command again); cells in flight were abandoned"], where
    if not first:
        assert f"{N_QUICK} of {N_CELLS} cells already finished in {out}: skipped" in stdout
    # the finished cells only, each with its artifact and rows; nothing half-written
    res = pd.read_csv(out / "results.csv").drop_duplicates(KEY)
    assert sorted(res["target"]) == ["two_mode"] * N_QUICK and (res["status"] == "ok").all(), where
    assert len({p.name for p in (out / "cells").iterdir()}) == N_QUICK, where
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".tmp")], where
    return sent, after


def resume_completes(project, out, backend_args):
    (project / "hold").unlink()
    p = subprocess.run(command(project, out, backend_args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{N_QUICK} of {N_CELLS} cells already finished in {out}: skipped" in p.stdout
    res = pd.read_csv(out / "results.csv").drop_duplicates(KEY)
    assert len(res) == N_CELLS and (res["status"] == "ok").all()


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_signal_stops_a_local_sweep(project, tmp_path, jobs):
    """-j 1 (the cell in the sweep's process) and -j 2 (loky workers, 7 cells handed to the pool, 2 waiting).
    With -j 1, SIGTERM comes to a sweep started under nohup, after a SIGHUP that it ignores."""
    out = tmp_path / "r"
    for i, (sig, to) in enumerate(STOPS[jobs]):
        nohup = jobs == 1 and sig == signal.SIGTERM
        check_stopped(project, out, ["-j", str(jobs)], jobs, sig, to, tmp_path, i == 0, nohup)
    resume_completes(project, out, ["-j", str(jobs)])


def test_each_signal_stops_a_dask_sweep_and_frees_the_workers(project, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        workers = client.run(os.getpid)  # address -> pid
        args = ["--backend", "dask", "--scheduler", cluster.scheduler_address]
        out = tmp_path / "d"
        for i, (sig, to) in enumerate(STOPS["dask"]):
            # a task for each worker (one thread), queued behind its held cell as the signal goes out: it runs
            # once the cell, which had close to 20 s of training left, has stopped (time.monotonic is the same
            # clock in every process of this machine)
            sent, probes = check_stopped(project, out, args, 2, sig, to, tmp_path, i == 0, after_signal=lambda: [
                client.submit(time.monotonic, workers=[a], allow_other_workers=False, pure=False) for a in workers])
            busy = max(f.result(timeout=60) for f in probes) - sent
            assert busy < 10, f"{sig.name} to the {to}: workers busy {busy:.1f} s after the signal"
            # the same worker processes: the cells were stopped, not their workers
            assert client.run(os.getpid) == workers
        resume_completes(project, out, args)


def test_sigkill_leaves_no_worker_behind(project, tmp_path):
    """SIGKILL cannot be caught: the local workers notice that their sweep's process is gone and end within
    seconds (they ignore the stop signals, so nothing else would end their cells)."""
    (project / "hold").write_text(" ".join(HELD))
    shutil.rmtree(project / "started", ignore_errors=True)
    out = tmp_path / "k"
    proc = subprocess.Popen(command(project, out, ["-j", "2"]), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: len(in_flight(project)) >= 2, 300, proc, "2 cells were training")
        assert len(session_processes(proc.pid)) > 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not session_processes(proc.pid)
    finally:
        kill_all(proc.pid)


def test_closed_terminal(project, tmp_path):
    """A sweep run in a terminal that is closed (SSH connection lost, window closed): the kernel sends SIGHUP to
    the terminal's foreground group, and the terminal can no longer be written to. The sweep still stops with
    status 129, keeps its finished cells and leaves no process behind."""
    (project / "hold").write_text(" ".join(HELD))
    shutil.rmtree(project / "started", ignore_errors=True)
    out = tmp_path / "t"
    master, slave = os.openpty()

    def own_terminal():  # a new session whose controlling terminal is the pty, as a login shell's job has
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    proc = subprocess.Popen(command(project, out, ["-j", "2"]), cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=own_terminal)
    os.close(slave)
    try:
        deadline = time.monotonic() + 300
        while len(in_flight(project)) < 2:  # the terminal's output is read, or the sweep would block writing it
            assert time.monotonic() < deadline and proc.poll() is None, "no cells in flight"
            if select.select([master], [], [], 0.05)[0]:
                os.read(master, 65536)
        os.close(master)  # the terminal is gone
        master = None
        assert proc.wait(timeout=EXIT_BOUND_S) == 128 + signal.SIGHUP
        deadline = time.monotonic() + 10
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not session_processes(proc.pid)
    finally:
        if master is not None:
            os.close(master)
        kill_all(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = pd.read_csv(out / "results.csv").drop_duplicates(KEY)
    assert sorted(res["target"]) == ["two_mode"] * N_QUICK
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".tmp")]


def test_the_python_api_raises_interrupted(project, tmp_path, monkeypatch):
    """bench.run with -j 2 stopped by SIGTERM (sent by a thread of this process once two cells train) raises
    Interrupted (a KeyboardInterrupt) with the command line's message; the workers that ran the held cells are
    gone and this process's own SIGTERM handler is back."""
    import threading

    import psutil

    import algorithms
    import bench
    from bench import plugins, registry
    from bench.errors import Interrupted

    for name, where in (("ALGORITHMS", algorithms), ("ORIGINS", registry), ("SPECS", plugins)):
        monkeypatch.setattr(where, name, dict(getattr(where, name)))  # the plug-in is gone afterwards
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "held_cd", raising=False)
    (project / "hold").write_text(" ".join(HELD))
    shutil.rmtree(project / "started", ignore_errors=True)
    out = tmp_path / "a"

    over = threading.Event()

    def terminate_once_training():
        while len(in_flight(project)) < 2:
            if over.wait(0.05):  # bench.run ended without the signal: send none (it would end pytest)
                return
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    sender = threading.Thread(target=terminate_once_training)
    sender.start()
    try:
        with pytest.raises(Interrupted) as e:
            bench.run(str(project / "held.toml"), "smoke", out=out, jobs=2)
    finally:
        over.set()
        sender.join()
    assert e.value.signum == signal.SIGTERM and e.value.exit_status == 143
    assert str(e.value) == (f"interrupted by SIGTERM: {N_QUICK} of {N_CELLS} cells saved in {out}; the other "
                            f"{N_CELLS - N_QUICK} run on resume (the same command again); cells in flight were "
                            "abandoned")
    assert signal.getsignal(signal.SIGTERM) is before
    workers = {int(name.rsplit("-", 1)[1]) for name in in_flight(project)}
    assert len(workers) == 2 and os.getpid() not in workers
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) for p in workers)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_waits_until_a_cell_is_written(tmp_path, monkeypatch, sig):
    """A stop signal that arrives between a cell's artifact and its rows is acted on once both are written: the
    artifact never lacks its rows."""
    from bench import store as store_mod
    from bench.errors import Interrupted
    from bench.stopping import stop_on_signals

    real = store_mod.atomic_write_npz

    def write_then_signal(path, **arrays):
        real(path, **arrays)
        signal.raise_signal(sig)

    monkeypatch.setattr(store_mod, "atomic_write_npz", write_then_signal)
    key = {"suite": "s", "target": "two_mode", "algorithm": "a", "fidelity": "smoke", "seed": 0}
    st = store_mod.ResultStore(tmp_path)
    with pytest.raises(Interrupted) as e, stop_on_signals():
        st.add([{**key, "metric": "m", "value": 1.0, "status": "ok"}], [], {"x": [1.0]}, key)
    assert e.value.signum == sig
    assert st.artifact_path(key).exists() and len(pd.read_csv(tmp_path / "results.csv")) == 1
