"""Convolutional energies for images (the suite's image convention: flattened inputs (n, C*H*W) in [-1, 1],
reshaped here to (n, C, H, W); see datasets/images.py).

``Conv003``: 003 §4.2's MNIST energy, "a simple six-layer convolutional neural network with the swish
activation and about 77K parameters". 003 gives no more detail, so the layers are this suite's reading: five
convolutions and a final linear layer, swish (SiLU) after each convolution,

    conv 3x3 C->w, conv 4x4/2 w->2w, conv 3x3 2w->2w, conv 4x4/2 2w->4w, conv 3x3/2 4w->3w, linear -> 1

with w = 16 for 28x28 (28 -> 14 -> 7 -> 4): 78,929 parameters, the closest round sizing to 003's ~77k.
``Conv003Small`` is the same network sized down for 8x8 images (w = 8; 8 -> 4 -> 2 -> 1): 19,649 parameters.
The last layer is an ``nn.Linear``, so Jarzynski's ``reference_std`` start (E_theta0 = 0) applies.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from algorithms.energies import ENERGIES, Energy


def image_shape(dim: int) -> tuple[int, int, int]:
    """(C, H, W) of a flattened square image: one channel when dim is a square, else three (dim = 3 s^2)."""
    s = math.isqrt(dim)
    if s * s == dim:
        return (1, s, s)
    s = math.isqrt(dim // 3)
    if dim % 3 == 0 and 3 * s * s == dim:
        return (3, s, s)
    raise ValueError(f"a convolutional energy needs square images (dim = s^2 or 3 s^2), got dim = {dim}")


class Conv003(Energy):
    """003 §4.2's six-layer swish CNN energy (module docstring), on flattened square images."""

    width = 16

    def __init__(self, dim: int = 784, width: int | None = None):
        super().__init__()
        self.shape = image_shape(dim)
        c, h, _ = self.shape
        w = width or self.width
        convs = [nn.Conv2d(c, w, 3, 1, 1), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.Conv2d(2 * w, 2 * w, 3, 1, 1),
                 nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.Conv2d(4 * w, 3 * w, 3, 2, 1)]
        layers = []
        for conv in convs:
            layers += [conv, nn.SiLU()]
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_feat = self.features(torch.zeros(1, *self.shape)).numel()
        self.out = nn.Linear(n_feat, 1)

    def forward(self, x):
        f = self.features(x.reshape(-1, *self.shape))
        return self.out(f.flatten(1)).squeeze(-1)


class Conv003Small(Conv003):
    """Conv003 sized down for 8x8 images (w = 8)."""

    width = 8


ENERGIES.update({"conv003": Conv003, "conv003_small": Conv003Small})
