"""The suite's standard Gaussian draw for chain noise.

A float64 normal draw costs ~4x a float32 one on the CPU (measured here: ~10-12 ms against ~2.7 ms for a
1e4 x 50 draw, the cast included). Chains in float64 therefore draw their noise in float32 and cast it. This
keeps the noise N(0, I) up to float32 rounding of each draw (relative 6e-8) and torch's float32 Box-Muller
tail, which ends at sqrt(2 log 2^24) ~ 5.8 standard deviations: the mass cut off is ~8e-9 per coordinate,
far below any Monte Carlo error of the suite. For float32 and lower precision the draw is exactly
``torch.randn_like(x)`` (same values, same random stream).
"""

from __future__ import annotations

import torch
from torch import Tensor


def standard_normal_like(x: Tensor, generators=None) -> Tensor:
    """xi ~ N(0, I) of x's shape, dtype and device; float64 draws are made in float32 and cast. ``generators``
    (seeds trained together, algorithms/stacking.py): x has a leading seed axis and slice s is drawn from
    ``generators[s]``, the same numbers as ``standard_normal_like(x[s])`` on a global stream in that state."""
    if generators is not None:
        out = torch.empty(x.shape, dtype=torch.float32 if x.dtype == torch.float64 else x.dtype, device=x.device)
        for s, g in enumerate(generators):
            out[s].normal_(generator=g)
        return out.to(x.dtype)
    if x.dtype == torch.float64:
        return torch.randn(x.shape, dtype=torch.float32, device=x.device).to(torch.float64)
    return torch.randn_like(x)
