import pytest
import torch

import bench  # noqa: F401  (loads this suite's own `datasets` package first)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield
