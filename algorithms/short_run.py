"""Short-run, non-persistent ULA from noise (Nijkamp et al. 2019, "Learning non-convergent non-persistent
short-run MCMC toward EBM").

    for each iteration:
        X_0 ~ noise (uniform on the target's box, or N(0, I))
        X_K = K ULA steps from X_0
        gradient step on mean U(x+) - mean U(X_K)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from algorithms.contrastive import ContrastiveConfig, ContrastiveEBM


@dataclass
class ShortRunConfig(ContrastiveConfig):
    init: Literal["uniform", "normal"] = "uniform"


class ShortRun(ContrastiveEBM):
    name = "short_run"
    paper = "Nijkamp et al. 2019 (short-run MCMC); the short-run baseline of 000/003"
    Config = ShortRunConfig
    #: its chain starts draw random numbers from ``self.generator`` only: its seeds may train stacked (stacking.py)
    stacks = True

    def start_chains(self, x_pos):
        return self.chain_starts(x_pos.shape[0])

    def chain_starts(self, n):
        return self.initial(self.config.init, n)
