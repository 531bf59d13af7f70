"""Work accounting shared by every sampler and algorithm, so runs can be compared at equal work."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Work:
    """Per-sample counts: evaluating U at 64 points is 64 ``energy_evals``; a gradient of U (w.r.t. x or
    theta) at 64 points is 64 ``grad_evals``; ``flow_passes`` counts flow forward/inverse passes."""

    energy_evals: int = 0
    grad_evals: int = 0
    flow_passes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
