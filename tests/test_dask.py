"""The same sweep on a Dask distributed cluster (2 workers on loopback); a worker killed mid-sweep loses
no finished cell."""

import os
import signal
import threading
import time

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")  # in the test extra; skipped only outside it

from bench.cli import main  # noqa: E402
from bench.store import KEY  # noqa: E402

SMOKE = ["run", "--suite", "toy2d", "--fidelity", "smoke", "--no-report", "--backend", "dask"]


@pytest.fixture()
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


def test_sweep_on_a_local_dask_cluster(cluster, tmp_path):
    out = tmp_path / "d"
    argv = [*SMOKE, "--scheduler", cluster.scheduler_address, "--algorithms", "cd", "short_run",
            "--targets", "two_mode", "rings", "--out", str(out)]
    assert main(argv) == 0
    res = pd.read_csv(out / "results.csv")
    assert len(res.drop_duplicates(KEY)) == 4 and (res["status"] == "ok").all()


def test_killed_worker_loses_no_finished_cell(cluster, tmp_path):
    out = tmp_path / "k"
    argv = [*SMOKE, "--scheduler", cluster.scheduler_address, "--seeds", "3", "--algorithms", "cd", "ula_ebm",
            "--targets", "two_mode", "four_mode", "--out", str(out)]
    killed = []

    def kill_one_worker_after_first_cells():
        deadline = time.time() + 120
        while time.time() < deadline:
            n = len(pd.read_csv(out / "results.csv").drop_duplicates(KEY)) if (out / "results.csv").exists() else 0
            if n >= 2:
                workers = list(cluster.workers.values())
                pid = workers[0].process.pid
                os.kill(pid, signal.SIGKILL)
                killed.append(n)
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_one_worker_after_first_cells)
    t.start()
    assert main(argv) == 0
    t.join()
    assert killed and killed[0] < 12, f"no worker was killed mid-sweep ({killed})"  # else nothing was tested
    res = pd.read_csv(out / "results.csv")
    assert len(res.drop_duplicates(KEY)) == 12 and (res["status"] == "ok").all()


def test_dask_backend_needs_a_scheduler(capsys, tmp_path):
    assert main([*SMOKE, "--out", str(tmp_path / "x")]) == 2
    assert "needs --scheduler" in capsys.readouterr().err
