"""A tiny image target shared by the image tests (not a test module: pytest collects test_*.py only)."""

import torch


class Digits8:
    """The 8x8 digits of scikit-learn in [-1, 1], flattened, shape (1, 8, 8): a tiny image target."""

    name = "digits8_test"
    dim = 64
    shape = (1, 8, 8)
    box = ((-1.0, 1.0),) * 64
    has_density = False

    def __init__(self):
        from sklearn.datasets import load_digits

        self.x = torch.tensor(load_digits().data, dtype=torch.float32) / 16 * 2 - 1
