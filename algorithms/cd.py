"""Contrastive divergence (003 Alg. 3; Hinton 2002).

    for each iteration k:
        X_0 = the positive batch (walkers restarted at the data)
        X_P = P ULA steps from X_0
        gradient step on mean U(x+) - mean U(X_P)

``restart_every`` > 1 keeps the walkers between restarts (the 003 reference code does one ULA step per
iteration and restarts at the data every 4 iterations); 1 is Alg. 3 as written.
"""

from __future__ import annotations

from dataclasses import dataclass

from algorithms.contrastive import ContrastiveConfig, ContrastiveEBM


@dataclass
class CDConfig(ContrastiveConfig):
    restart_every: int = 1


class CD(ContrastiveEBM):
    name = "cd"
    paper = "003 Alg. 3"
    Config = CDConfig
    #: its chain starts draw random numbers from ``self.generator`` only: its seeds may train stacked (stacking.py)
    stacks = True

    def __init__(self, problem, energy, config):
        super().__init__(problem, energy, config)
        self._walkers = None
        self._since_restart = 0

    def start_chains(self, x_pos):
        restart = (
            self._walkers is None
            or self._since_restart % self.config.restart_every == 0
            or self._walkers.shape[0] != x_pos.shape[0]
        )
        self._since_restart += 1
        return x_pos.detach().clone() if restart else self._walkers

    def keep(self, x_neg):
        self._walkers = x_neg.detach()

    def chain_starts(self, n):
        return self.initial("data", n)
