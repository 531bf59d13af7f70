"""Energy functions U_theta: R^d -> R (the model density is exp(-U) / Z)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from algorithms.work import Work


class Energy(nn.Module):
    """Base class: ``forward(x)`` returns U(x) with shape (n,).

    Optional capabilities, used where present: ``log_z()`` (exact log normaliser, a tensor differentiable in
    theta), ``sample_exact(n)`` (exact samples of exp(-U)/Z) and ``mode_weights()`` (the model's own weight
    of each of its mixture components, in the order of the target's modes)."""

    def value(self, x: Tensor, work: Work) -> Tensor:
        work.energy_evals += x.shape[0]
        return self(x)

    def value_and_grad(self, x: Tensor, work: Work) -> tuple[Tensor, Tensor]:
        """U(x) (detached) and grad_x U(x), counting one energy and one gradient evaluation per point."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = self(x)
            (g,) = torch.autograd.grad(u.sum(), x)
        work.energy_evals += x.shape[0]
        work.grad_evals += x.shape[0]
        return u.detach(), g

    def grad(self, x: Tensor, work: Work) -> Tensor:
        return self.value_and_grad(x, work)[1]


def has_exact_log_z(energy) -> bool:
    """The energy knows its exact log normaliser (and is not tilted by a reference density)."""
    return hasattr(energy, "log_z") and not getattr(energy, "_tilted", False)


def samples_exactly(energy) -> bool:
    """The energy samples exp(-U)/Z exactly (and is not tilted by a reference density)."""
    return hasattr(energy, "sample_exact") and not getattr(energy, "_tilted", False)


class TargetEnergy(Energy):
    """U = -log p* of a target with an exact density: the EBM equal to the truth (known-answer tests of the
    evaluation and the audit). No parameters; float64."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, x):
        return -self.target.log_prob(x.double())


def states_mode_weights(energy) -> bool:
    """The energy states its own mode weights (a parametric mixture, not tilted by a reference density)."""
    return hasattr(energy, "mode_weights") and not getattr(energy, "_tilted", False)


class MLPEnergy(Energy):
    """A fully connected energy d -> hidden... -> 1."""

    def __init__(self, dim: int, hidden: tuple[int, ...], activation: str = "leaky_relu", slope: float = 0.05):
        super().__init__()
        acts = {
            "leaky_relu": lambda: nn.LeakyReLU(slope),
            "swish": nn.SiLU,
            "softplus": nn.Softplus,
            "elu": nn.ELU,
        }
        if activation not in acts:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(acts)}")
        layers: list[nn.Module] = []
        sizes = (dim, *hidden)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), acts[activation]()]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).squeeze(-1)


class ToyMLP(MLPEnergy):
    """The ~10k-parameter toy EBM of Nijkamp et al. 2020 ("anatomy") used by 000 App. C.2-C.4:
    MLP 2 -> 32 -> 64 -> 64 -> 64 -> 1 with LeakyReLU(0.05), 10,593 parameters. Built from Linear layers
    (the anatomy code's 1x1 convolutions compute the same map, ~3.5x slower).

    In d dimensions (000 App. C.5: "the same as described in (Nijkamp et al., 2020a)") only the input layer
    grows: d -> 32 -> 64 -> 64 -> 64 -> 1, 10,529 + 32 d parameters (11,041 at d = 16, 12,577 at d = 64);
    000 gives no other sizing for d."""

    def __init__(self, dim: int = 2):
        super().__init__(dim, (32, 64, 64, 64), "leaky_relu", 0.05)


class QuadraticEnergy(Energy):
    """U(x) = |x - mu|^2 / (2 s^2) with learnable mu and log s: the Gaussian N(mu, s^2 I).

    Its log Z = d log(s sqrt(2 pi)) is exact, so it serves tests that need an analytic answer."""

    def __init__(self, dim: int, mean=None, log_std: float = 0.0):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.log_std = nn.Parameter(torch.tensor(float(log_std)))

    def forward(self, x):
        return ((x - self.mean) ** 2).sum(-1) / (2 * torch.exp(2 * self.log_std))

    def log_z(self) -> Tensor:
        return self.mean.shape[0] * (self.log_std + 0.5 * math.log(2 * math.pi))

    def sample_exact(self, n: int) -> Tensor:
        with torch.no_grad():
            return self.mean + self.log_std.exp() * torch.randn(n, self.mean.shape[0], device=self.mean.device,
                                                                dtype=self.mean.dtype)


class GMMStudent(Energy):
    """The parametric student of 003 eq. (15): U(x) = -log(exp(-|x-a|^2/2) + exp(-|x-b|^2/2 - z)),
    theta = (a, b, z), with the exact log Z = (d/2) log 2 pi + log(1 + e^-z) (003 §4.1).

    Initialisation (003 App. B.1): a, b ~ 0.01 N(0, I) with first coordinates -0.1 and +0.1, z = 0, so
    rho_theta0 is close to N(0, I). The model samples itself exactly (``sample_exact``), which is how 003
    starts its Jarzynski walkers ("sampled from rho_theta0").

    Its mode weights are its parameters (``mode_weights``): sigma(z) = 1 / (1 + e^-z) for the component at a
    (003's p_k, Fig. 1 and 6 left panels) and 1 - sigma(z) for b, in the teacher's order (a* first). This is
    not the share of its samples nearest each teacher mode: before a and b separate both components sit
    near 0 and that share is ~0.023 for the -10 mode while p_k = 0.5.
    """

    def __init__(self, dim: int, init_scale: float = 0.01, first: float = 0.1):
        super().__init__()
        a = init_scale * torch.randn(dim)
        b = init_scale * torch.randn(dim)
        a[0], b[0] = -first, first
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        self.z = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        la = -0.5 * ((x - self.a) ** 2).sum(-1)
        lb = -0.5 * ((x - self.b) ** 2).sum(-1) - self.z
        return -torch.logaddexp(la, lb)

    def log_z(self) -> Tensor:
        d = self.a.shape[0]
        return 0.5 * d * math.log(2 * math.pi) + torch.nn.functional.softplus(-self.z)

    @property
    def p(self) -> float:
        """Weight of the mode at a: 1 / (1 + e^-z)."""
        return float(torch.sigmoid(self.z.detach()))

    def mode_weights(self) -> Tensor:
        """(sigma(z), 1 - sigma(z)): the weights of the components at a and b (003 eq. 15; p_k of Fig. 1)."""
        p = torch.sigmoid(self.z.detach())
        return torch.stack([p, 1 - p])

    def sample_exact(self, n: int) -> Tensor:
        with torch.no_grad():
            at_a = torch.rand(n, device=self.a.device, dtype=self.a.dtype) < torch.sigmoid(self.z)
            mean = torch.where(at_a[:, None], self.a, self.b)
            return mean + torch.randn_like(mean)


class SwishMLP(MLPEnergy):
    """002 A.1's 2-D energy: "a 5-layer fully connected network with 256 hidden units and swish activation".
    We read "5-layer" as five Linear layers, d -> 256 -> 256 -> 256 -> 256 -> 1 (four hidden layers of 256
    units, swish = SiLU after each), 198,401 parameters in 2-D. Swish is smooth, so the Hessian trace of the
    ODE flow's density (002 eq. 6) exists."""

    def __init__(self, dim: int = 2, hidden: tuple[int, ...] = (256,) * 4):
        super().__init__(dim, hidden, "swish")


class SmallSwishMLP(SwishMLP):
    """A cheaper stand-in for SwishMLP (quick fidelities): d -> 64 -> 64 -> 64 -> 1, swish."""

    def __init__(self, dim: int = 2):
        super().__init__(dim, (64,) * 3)


ENERGIES = {
    "toy_mlp": ToyMLP,
    "swish_mlp": SwishMLP,
    "swish_mlp_small": SmallSwishMLP,
    "quadratic": QuadraticEnergy,
    "gmm_student": GMMStudent,
}


def make_energy(name: str, dim: int, shape: tuple[int, ...] | None = None) -> Energy:
    """The energy ``name`` on dim-dimensional inputs; image energies (``image = True``, conv_energies.py)
    also get the target's image ``shape`` (C, H, W)."""
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; valid: {', '.join(ENERGIES)}")
    cls = ENERGIES[name]
    return cls(dim, shape) if getattr(cls, "image", False) else cls(dim)
