"""Threads per cell: small-batch (dispatch-bound) cells run on one thread, larger ones on the sweep's share."""

from bench.runner import SMALL_BATCH, cell_threads
from bench.suite import load_suite, resolve_cells
from bench.sweep import parallelism


def _cell(fidelity, name, target):
    return resolve_cells(load_suite("toy2d"), fidelity, [name], [target], seeds=1)[0]


def test_cell_threads_from_batch_size():
    small = _cell("paper", "ula_ebm", "two_mode")  # batch 64
    assert small.train.batch_size < SMALL_BATCH
    assert cell_threads(_cell("paper", "ula_ebm", "four_mode"), 2) == 2  # batch 256
    assert cell_threads(small, 2) == 1
    assert cell_threads(small, None) is None and cell_threads(small, 1) == 1
    # Jarzynski's 8192 walkers and flowMC's i-SIR pools (64 chains x 64 particles) keep the sweep's threads
    assert cell_threads(_cell("paper", "jarzynski", "four_mode"), 2) == 2
    assert cell_threads(_cell("paper", "flowmc_ebm", "four_mode"), 2) == 2


def test_omp_num_threads_caps_the_threads_of_a_sweep(monkeypatch):
    """The runner sets torch's threads itself: OMP_NUM_THREADS, where set, is the upper limit per process."""
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert parallelism(10, "cpu", 2) == (2, 4)
    assert parallelism(1, "cpu", 0) == (1, 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallelism(10, "cpu", 2) == (2, 1)
    assert parallelism(1, "cpu", 0) == (1, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallelism(10, "cpu", 1) == (1, 3)
    assert parallelism(10, "cpu", 4) == (4, 2)  # below the cap: the cores' share
    for junk in ("", "0", "two", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", junk)
        assert parallelism(10, "cpu", 2) == (2, 4)
