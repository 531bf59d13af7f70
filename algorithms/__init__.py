"""Training algorithms for EBMs and the shared parts they are built from (energies, samplers). Nothing here
imports the harness (bench/) or the targets (datasets/): an algorithm gets its target through ``Problem``."""

from algorithms import conv_energies  # noqa: F401  (the image energies: conv_energies.BUILT_IN)
from algorithms.base import ConfigError, Diverged, Problem, TrainingAlgorithm, build_config
from algorithms.cd import CD
from algorithms.coopflow import CoopFlow
from algorithms.flowmc_ebm import FlowMCEBM
from algorithms.jarzynski import Jarzynski
from algorithms.nce_ebm import NCEEBM
from algorithms.noise_free import NoiseFreeEuler, NoiseFreeODE, ODEFlowML, SelfAdversarial
from algorithms.nt_ebm import NTEBM
from algorithms.pcd import PCD, ULAEBM
from algorithms.short_run import ShortRun

#: the suite's own algorithms. Add one by writing one module with a TrainingAlgorithm subclass and listing it here;
#: bench.registry registers these through the same door as plug-ins.
BUILT_IN: tuple[type[TrainingAlgorithm], ...] = (
    ULAEBM, PCD, CD, ShortRun, Jarzynski,
    FlowMCEBM, NTEBM, NCEEBM, CoopFlow,  # flow-assisted training (000, 001, 004)
    # noise-free dynamics as a generator, the self-adversarial loss and the ODE flow trained by likelihood (002)
    NoiseFreeEuler, NoiseFreeODE, SelfAdversarial, ODEFlowML,
)

#: name -> class of every registered algorithm, built-in or plug-in: filled by bench.registry.register only
ALGORITHMS: dict[str, type[TrainingAlgorithm]] = {}

__all__ = ["ALGORITHMS", "BUILT_IN", "ConfigError", "Diverged", "Problem", "TrainingAlgorithm", "build_config"]
