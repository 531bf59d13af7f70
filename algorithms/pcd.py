"""Persistent contrastive divergence with ULA: ULA-EBM (000 Alg. 3) and PCD (003 Alg. 4).

    1. draw positives x+ ~ p*                                   (the batch given to step)
    2. x- = ULA(-U_theta, x~, h, L) from a batch x~ of the persistent state
    3. write x- back into the persistent state
    4. gradient step on mean U(x+) - mean U(x-)

000's ULA-EBM keeps a bank of ``n_persistent`` states initialised uniform on the target's box (000 Tables
4-5 say "uniform"; the box is this suite's reading) and draws a batch of them each iteration (the
anatomy code's replay buffer). 003's PCD is the special case n_persistent = batch size, one ULA step per
iteration, walkers started at the data (``init = "data"``).

``augment`` (images only) is 003's "PCD with data augmentation" (003 §4.3, Table 1 second row: Carbone, Hua,
Coste, Vanden-Eijnden, "Efficient training of energy-based models using Jarzynski equality", 2023), the
augmentation of Du et al. 2021 that 003 cites: each chain state drawn from the persistent state is randomly
augmented (``flip``: left-right flips only; ``du2021``: crop-rescale, flip, colour distortion, blur;
algorithms/augment.py) before its ULA steps, as a transition of the sampler; the positives are left alone.
``none`` (the default) draws no random number more than plain PCD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from algorithms.augment import augment
from algorithms.base import ConfigError
from algorithms.contrastive import ContrastiveConfig, ContrastiveEBM
from algorithms.samplers import ChainBank


@dataclass
class PCDConfig(ContrastiveConfig):
    n_persistent: int = 8192
    init: Literal["uniform", "normal", "data", "model"] = "uniform"
    #: random augmentation of the chain states drawn each iteration, before their ULA steps (image targets only;
    #: 003 §4.3 / Du et al. 2021): none, left-right flips, or Du et al.'s crop + flip + colour + blur
    augment: Literal["none", "flip", "du2021"] = "none"


def image_shape(target):
    """The (C, H, W) of an image target, None for a vector target."""
    shape = getattr(target, "shape", None)
    return tuple(shape) if shape is not None and len(shape) == 3 else None


class PCD(ContrastiveEBM):
    name = "pcd"
    paper = "000 Alg. 3 (ULA-EBM); 003 Alg. 4 (PCD)"
    Config = PCDConfig
    #: its chain starts draw random numbers from ``self.generator`` only: its seeds may train stacked (stacking.py)
    stacks = True

    @classmethod
    def check_target(cls, config, target):
        if config.augment != "none" and image_shape(target) is None:
            raise ConfigError(f"augment = {config.augment!r} needs an image target; "
                              f"{getattr(target, 'name', target)!r} is not one (use augment = \"none\")")

    def __init__(self, problem, energy, config):
        self.check_target(config, problem.target)
        super().__init__(problem, energy, config)
        self._shape = image_shape(problem.target)
        self.bank = ChainBank(self.initial(config.init, config.n_persistent))
        self._idx = None

    def start_chains(self, x_pos):
        if x_pos.shape[0] == len(self.bank):
            # the whole bank moves (003's PCD): the loss is a mean over the chains and each chain gets its own
            # noise, so drawing it in a random order and scattering it back changes nothing but the order
            self._idx = None
            return self._augment(self.bank.states)
        self._idx, x = self.bank.draw(x_pos.shape[0], self.generator)
        return self._augment(x)

    def _augment(self, x):
        if self.config.augment == "none":
            return x
        return augment(x, self._shape, self.config.augment)

    def keep(self, x_neg):
        if self._idx is None:
            self.bank.states = x_neg.detach()
        else:
            self.bank.put(self._idx, x_neg)

    def chain_starts(self, n):
        return self.bank.draw(min(n, len(self.bank)))[1]


class ULAEBM(PCD):
    """000's name for PCD with its settings (Tables 4-5: ULA, h = 0.125^2/2, 512 steps, uniform start)."""

    name = "ula_ebm"
