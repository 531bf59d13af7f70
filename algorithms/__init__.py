"""Training algorithms for EBMs and the shared parts they are built from (energies, samplers)."""

from bench._ownpkg import ensure_own_datasets

ensure_own_datasets()

from algorithms import conv_energies  # noqa: E402,F401  (the image energies: conv_energies.BUILT_IN)
from algorithms.base import ConfigError, Diverged, Problem, TrainingAlgorithm, build_config  # noqa: E402
from algorithms.cd import CD  # noqa: E402
from algorithms.coopflow import CoopFlow  # noqa: E402
from algorithms.flowmc_ebm import FlowMCEBM  # noqa: E402
from algorithms.jarzynski import Jarzynski  # noqa: E402
from algorithms.nce_ebm import NCEEBM  # noqa: E402
from algorithms.noise_free import NoiseFreeEuler, NoiseFreeODE, ODEFlowML, SelfAdversarial  # noqa: E402
from algorithms.nt_ebm import NTEBM  # noqa: E402
from algorithms.pcd import PCD, ULAEBM  # noqa: E402
from algorithms.short_run import ShortRun  # noqa: E402

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
