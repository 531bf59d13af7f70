"""Targets with ground truth (see datasets.base.Target for the contract)."""

from datasets.base import GaussianMixture, NoGroundTruth, Target
from datasets.gmm import GMM1d, GMM50d, TwoModeGMM
from datasets.highdim import HD_TARGETS, HDMixture
from datasets.images import IMAGE_TARGETS, DataError
from datasets.toy2d import EightGaussians, FourMode, GaussianGrid, Rings, Spiral, SwissRoll, TwoMode

#: name -> factory. Add a target by writing a Target subclass and registering it here.
TARGETS: dict[str, type[Target]] = {
    cls.name: cls
    for cls in (TwoMode, FourMode, EightGaussians, Rings, GaussianGrid, SwissRoll, Spiral, GMM50d, GMM1d, *HD_TARGETS,
                *IMAGE_TARGETS)
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]()
    except KeyError:
        raise KeyError(f"unknown target {name!r}; valid: {', '.join(sorted(TARGETS))}") from None


__all__ = ["TARGETS", "DataError", "GaussianMixture", "HDMixture", "NoGroundTruth", "Target", "TwoModeGMM",
           "get_target"]
