"""Training algorithms for EBMs and the shared parts they are built from (energies, samplers)."""

from bench._ownpkg import ensure_own_datasets

ensure_own_datasets()

from algorithms import conv_energies  # noqa: E402,F401  (registers the image energies)
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

#: name -> class. Add an algorithm by writing one module with a TrainingAlgorithm subclass and
#: registering it here.
ALGORITHMS: dict[str, type[TrainingAlgorithm]] = {cls.name: cls for cls in (ULAEBM, PCD, CD, ShortRun, Jarzynski)}

# flow-assisted training (000, 001, 004)
ALGORITHMS.update({cls.name: cls for cls in (FlowMCEBM, NTEBM, NCEEBM, CoopFlow)})

# noise-free dynamics as a generator, the self-adversarial loss and the ODE flow trained by likelihood (002)
ALGORITHMS.update({cls.name: cls for cls in (NoiseFreeEuler, NoiseFreeODE, SelfAdversarial, ODEFlowML)})

__all__ = ["ALGORITHMS", "ConfigError", "Diverged", "Problem", "TrainingAlgorithm", "build_config"]
