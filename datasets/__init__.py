"""Targets with ground truth (see datasets.base.Target for the contract)."""

from datasets.base import GaussianMixture, NoGroundTruth, Target
from datasets.gmm import GMM1d, GMM50d, TwoModeGMM
from datasets.highdim import HD_TARGETS, HDMixture
from datasets.images import IMAGE_TARGETS, DataError
from datasets.toy2d import EightGaussians, FourMode, GaussianGrid, Rings, Spiral, SwissRoll, TwoMode

#: the suite's own targets. Add one by writing a Target subclass and listing it here; bench.registry registers
#: these through the same door as plug-ins.
BUILT_IN: tuple[type[Target], ...] = (TwoMode, FourMode, EightGaussians, Rings, GaussianGrid, SwissRoll, Spiral,
                                      GMM50d, GMM1d, *HD_TARGETS, *IMAGE_TARGETS)

#: name -> class of every registered target, built-in or plug-in: filled by bench.registry.register only
TARGETS: dict[str, type[Target]] = {}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]()
    except KeyError:
        raise KeyError(f"unknown target {name!r}; valid: {', '.join(sorted(TARGETS))}") from None


__all__ = ["BUILT_IN", "TARGETS", "DataError", "GaussianMixture", "HDMixture", "NoGroundTruth", "Target", "TwoModeGMM",
           "get_target"]
