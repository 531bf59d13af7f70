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


def assert_learns(alg, score, data: torch.Tensor, test: torch.Tensor, ref: torch.Tensor, steps: int = 25,
                  margin: float = 0.5) -> None:
    """Train ``alg`` for ``steps`` iterations on random batches of 32 from ``data`` (no NaN in any log): the
    energy gap ``score(test) - score(ref)`` (held-out digits against reference images) must fall by more than
    ``margin`` from its value at the start."""

    def gap():
        with torch.no_grad():
            return float(score(test).mean() - score(ref).mean())

    g0 = gap()
    for _ in range(steps):
        logs = alg.step(data[torch.randint(0, data.shape[0], (32,))])
        assert all(v == v for v in logs.values())  # no nan
    assert gap() < g0 - margin, (g0, gap())
