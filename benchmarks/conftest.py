"""Shared fixtures of the benchmarks (pytest-benchmark; `python -m pytest benchmarks --benchmark-only`)."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Time on one torch thread (the sweep's setting for small cells), restoring the thread count after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
