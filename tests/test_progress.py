"""Progress of the cells a sweep runs in worker processes (bench.progress): a worker's progress file, the sweep's
"in flight" line with its time left on known numbers, a real -j 2 sweep that shows it and leaves no file, and the
same line on a Dask cluster, whose workers report through the scheduler's events."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import contextlib
import io
import os
import re
import tempfile

import pytest
from conftest import smoke_suite

from bench import progress
from bench.cli import main


def test_a_progress_file_is_written_at_most_every_every_s_and_at_the_last_iteration(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    report = progress.ProgressFile(str(tmp_path / "unit0"), every_s=5.0)
    assert progress.read(report.path) is None  # nothing reported yet
    report(1, 10)
    assert progress.read(report.path) == (1, 10)
    clock[0] += 4.9
    report(2, 10)
    assert progress.read(report.path) == (1, 10)  # too soon: not written
    clock[0] += 0.1
    report(3, 10)
    assert progress.read(report.path) == (3, 10)
    report(10, 10)
    assert progress.read(report.path) == (10, 10)  # the last iteration is always written
    assert sorted(os.listdir(tmp_path)) == ["unit0"]  # no temporary left beside it
    (tmp_path / "half").write_text("12")
    assert progress.read(tmp_path / "half") is None


def test_the_in_flight_line_extrapolates_the_time_left_from_the_rate_seen():
    with progress.InFlight(["a/t/s0", "b/t/s0,1"], every_s=5.0) as flight:
        folder = flight.folder
        flight.reporter(0)(100, 700)
        flight.reporter(1)(1_000, 109_000)
        assert flight.line([0, 1], now=0.0) == "in flight: a/t/s0 100/700, b/t/s0,1 1000/109000"  # no rate yet
        flight.reporter(0)(200, 700)
        flight.reporter(1)(1_100, 109_000)
        # 10 iterations per second each: 500 left is 50 s, 107,900 left is 10,790 s
        assert flight.line([0, 1], now=10.0) == ("in flight: a/t/s0 200/700 (50 s left), "
                                                 "b/t/s0,1 1100/109000 (3 h left)")
        assert flight.line([1], now=10.0) == "in flight: b/t/s0,1 1100/109000 (3 h left)"  # unit 0 finished
        assert flight.line([], now=10.0) == ""
    assert not folder.exists()


#: cells that train for seconds, not the smoke suite's milliseconds: the sweep looks at its workers every 0.2 s and
#: shows only units still running, so a unit must outlive several looks for the line to be seen on a fast machine
#: (CI's run of the smoke cells finished each of them between two looks and the line never appeared)
SUITE = smoke_suite(1000, targets=["two_mode"], algorithms=["cd", "ula_ebm"], eval_every=1000, n_steps=2)


def run_long_sweep(tmp_path, monkeypatch, extra, seeds):
    """Run the long cells with ``extra`` arguments, every line the sweep made recorded; check the units labelled
    with ``seeds`` were seen in flight with their workers' own moving counts, on the bar."""
    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # report every iteration, refresh at every look
    lines = []
    line = progress._Units.line
    monkeypatch.setattr(progress._Units, "line", lambda self, *a, **k: lines.append(line(self, *a, **k)) or lines[-1])
    suite = tmp_path / "long.toml"
    suite.write_text(SUITE)
    argv = ["run", "--suite", str(suite), "--fidelity", "smoke", "--no-report", "--out", str(tmp_path / "out"), *extra]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 0
    err = err.getvalue()
    seen = [m for x in lines for m in re.findall(rf"(?:cd|ula_ebm)/two_mode/s{seeds} (\d+)/(\d+)", x)]
    assert seen, lines[-5:]
    assert all(0 < int(it) <= int(total) == 1000 for it, total in seen)  # the workers' own counts, not made up
    assert len({it for it, _ in seen}) > 1  # the count moves from one look to the next
    assert re.search(rf"in flight: (cd|ula_ebm)/two_mode/s{seeds} \d+/1000", err), err[-2000:]  # on the bar


@pytest.mark.parametrize("stacked", [False, True])
def test_a_parallel_sweep_shows_its_cells_in_flight_and_leaves_no_progress_files(tmp_path, monkeypatch, stacked):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    extra = ["-j", "2", *(["--seeds", "2", "--stack-seeds"] if stacked else ["--seeds", "1"])]
    run_long_sweep(tmp_path, monkeypatch, extra, "0,1" if stacked else "0")
    assert list((tmp_path / "tmp").glob("bench-progress-*")) == []  # (torch keeps folders of its own there)


def test_a_sweep_on_a_dask_cluster_shows_its_cells_in_flight(tmp_path, monkeypatch):
    """The workers of a cluster may be other machines: they report through the scheduler's events instead of
    files; the line is the same."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        run_long_sweep(tmp_path, monkeypatch, ["--backend", "dask", "--scheduler", cluster.scheduler_address], "0")


class FakeClient:
    """A Dask client whose scheduler holds the given events of each topic (oldest first, as Client.get_events)."""

    def __init__(self, events):
        self.events = events

    def get_events(self, topic):
        if self.events is None:
            raise OSError("the scheduler does not answer")
        return [(float(t), msg) for t, msg in enumerate(self.events.get(topic, []))]


def test_the_dask_line_reads_each_units_latest_event_of_its_own_sweep_only():
    client = FakeClient({})
    flight = progress.DaskInFlight(["a/t/s0", "b/t/s0"], client)
    other = progress.DaskInFlight(["a/t/s0", "b/t/s0"], client)
    assert flight.topic != other.topic  # two sweeps on one scheduler
    assert flight.line([0, 1], now=0.0) == ""  # nothing reported
    client.events = {flight.topic: [{"unit": 0, "it": 100, "total": 700}, {"unit": 1, "it": 5, "total": 50},
                                    {"unit": 0, "it": 200, "total": 700}],
                     other.topic: [{"unit": 1, "it": 49, "total": 50}]}
    assert flight.line([0, 1], now=0.0) == "in flight: a/t/s0 200/700, b/t/s0 5/50"
    client.events[flight.topic].append({"unit": 0, "it": 300, "total": 700})
    assert flight.line([0], now=10.0) == "in flight: a/t/s0 300/700 (40 s left)"  # 10 it/s: 400 left
    client.events = None
    assert flight.line([0], now=20.0) == "in flight: a/t/s0 300/700 (80 s left)"  # scheduler silent: last known
    # the unit starts again from 0 (its worker lost, the cell rescheduled): the rate is measured anew
    client.events = {flight.topic: [{"unit": 0, "it": 300, "total": 700}, {"unit": 0, "it": 10, "total": 700}]}
    assert flight.line([0], now=30.0) == "in flight: a/t/s0 10/700"
    client.events[flight.topic].append({"unit": 0, "it": 110, "total": 700})
    assert flight.line([0], now=40.0) == "in flight: a/t/s0 110/700 (59 s left)"  # 10 it/s: 590 left
    report = flight.reporter(0)
    assert (report.topic, report.unit) == (flight.topic, 0)
    report(1, 10)  # outside a Dask worker: nothing sent, nothing raised


def test_a_sweep_runs_without_the_line_where_no_temporary_folder_can_be_made(tmp_path, monkeypatch, capsys):
    """A full or read-only temporary directory costs the progress line, not the sweep; a progress file that cannot
    be written costs nothing either."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    report = progress.ProgressFile(str(tmp_path / "gone" / "unit0"))
    report(1, 10)  # its folder does not exist: nothing written, nothing raised
    assert progress.read(report.path) is None
    monkeypatch.setattr(tempfile, "mkdtemp", full)
    argv = ["run", "--suite", "toy2d", "--fidelity", "smoke", "--no-report", "-j", "2", "--algorithms", "cd",
            "ula_ebm", "--targets", "two_mode", "--seeds", "1", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert "in flight" not in capsys.readouterr().err
    assert (tmp_path / "out" / "results.csv").exists()
