"""A RealNVP normalizing flow for vectors, the companion / backbone model of 000, 001 and 004.

The generative direction is the paper's transport map T_alpha (000 eq. 5; 001's and 004's g_alpha):

    x = T(z),  z ~ rho = N(0, sigma^2 I),   log lambda(x) = log rho(T^-1(x)) + log |det J_{T^-1}(x)|.

RealNVP (Dinh et al. 2017): ``n_layers`` affine couplings on alternating masks. Coupling k keeps one
half a of the coordinates and maps the other half b as

    b' = b * exp(s(a)) + t(a),   s = B tanh(s_raw / B)   (a bounded log-scale, B = ``scale_bound``),

with (s_raw, t) from one MLP of ``depth`` hidden layers of ``hidden`` units (ReLU). log |det| = sum s.
The halves (``mask``): ``"half"`` (the default) splits the coordinates into the first d // 2 and the rest,
``"interleaved"`` into the even and the odd ones (the two masks of the Gabrie group's RealNVP; the papers do not
say which they used; in 2-D they are the same). A target whose two halves are independent, like the
equal-weight mixture of the highdim suite under ``"half"``, makes the identity map a stationary point of the
likelihood: every coupling's expected gradient there is zero (docs/choices.md "CoopFlow").

Choices from 000 and the Gabrie group's code: the base is N(0, sigma^2 I) with a chosen sigma (000 App. C.5: sigma^2 =
the target's largest variance); the last linear layer of every coupling net is zeroed, so the flow starts
*exactly* at the identity map (000 §3 needs T_alpha0 = Id; its gradient is not zero, so learning starts at
once); the scale is tanh-bounded as in the Gabrie group's RealNVP.

Written here rather than taken from zuko 1.6 (whose ``RealNVP`` has the same structure): zuko rebuilds
torch.distributions transform objects on every call, which made one latent-space gradient step of NT-EBM
(flow + toy energy, 256 points, 1 thread) take 2.5 ms against 1.5 ms here, too slow for the quick suite.

Work: every evaluation of the map in either direction adds one ``flow_passes`` per sample (a backward pass
through it, e.g. for a gradient, is not counted separately, as ``grad_evals`` counts value + gradient once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from algorithms.base import AT_LEAST_1, NONNEG
from algorithms.flow_base import GaussianBase
from algorithms.image_flows import ImageFlow, max_levels
from algorithms.work import Work


class AffineCoupling(nn.Module):
    """b' = b exp(s(a)) + t(a) on the coordinates ``idx_b``, given the coordinates ``idx_a``."""

    def __init__(self, idx_a: list[int], idx_b: list[int], hidden: int, depth: int, scale_bound: float):
        super().__init__()
        d = len(idx_a) + len(idx_b)
        self.register_buffer("idx_a", torch.tensor(idx_a))
        self.register_buffer("idx_b", torch.tensor(idx_b))
        self.register_buffer("order", torch.argsort(torch.tensor(idx_a + idx_b)))  # (a, b) -> original order
        self.scale_bound = scale_bound
        sizes = [len(idx_a)] + [hidden] * depth
        layers: list[nn.Module] = []
        for i, o in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(i, o), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], 2 * len(idx_b)))
        self.net = nn.Sequential(*layers)
        self.d = d

    def _st(self, a: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(a).chunk(2, -1)
        b = self.scale_bound
        return b * torch.tanh(s / b), t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[..., self.idx_a], x[..., self.idx_b]  # (..., n, d): a stacked flow's leading seed axis too
        s, t = self._st(a)
        return torch.cat([a, b * s.exp() + t], -1)[..., self.order], s.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        a, b = y[..., self.idx_a], y[..., self.idx_b]
        s, t = self._st(a)
        return torch.cat([a, (b - t) * torch.exp(-s)], -1)[..., self.order], -s.sum(-1)


#: how a coupling splits the coordinates (``RealNVP``'s ``mask``)
MASKS = ("half", "interleaved")


class RealNVP(GaussianBase, nn.Module):
    """RealNVP on R^d with base N(0, sigma^2 I).

    Defaults follow 000 App. C.2: 4 couplings whose nets are "MLPs with 16 neurons on 3 layers (about 1k
    parameters total)", read as 3 linear layers (2 hidden of 16): 1,352 parameters in 2-D."""

    def __init__(self, dim: int, n_layers: int = 4, hidden: int = 16, depth: int = 2, base_scale: float = 1.0,
                 identity_init: bool = True, scale_bound: float = 2.0, mask: str = "half"):
        super().__init__()
        if dim < 2:
            raise ValueError("RealNVP couplings need dim >= 2")
        if base_scale <= 0:
            raise ValueError(f"base_scale must be positive, got {base_scale}")
        self.dim = dim
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        half = ((list(range(dim // 2)), list(range(dim // 2, dim))) if mask == "half"
                else (list(range(0, dim, 2)), list(range(1, dim, 2))))
        self.layers = nn.ModuleList(
            AffineCoupling(*(half if k % 2 == 0 else half[::-1]), hidden, depth, scale_bound)
            for k in range(n_layers))
        self.register_buffer("base_scale", torch.tensor(float(base_scale)))
        if identity_init:
            for layer in self.layers:
                nn.init.zeros_(layer.net[-1].weight)
                nn.init.zeros_(layer.net[-1].bias)

    # ----------------------------------------------------------------- the map, both directions
    def forward(self, z: Tensor, work: Work | None = None) -> tuple[Tensor, Tensor]:
        """x = T(z) and log |det dT/dz| (sampling direction). z (n, d), or (S, n, d) for a stacked flow
        (algorithms/stacking.py), whose work is counted per seed."""
        if work is not None:
            work.flow_passes += z.shape[-2]
        ladj = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
        for layer in self.layers:
            z, l = layer(z)
            ladj = ladj + l
        return z, ladj

    def inverse(self, x: Tensor, work: Work | None = None) -> tuple[Tensor, Tensor]:
        """z = T^-1(x) and log |det dT^-1/dx| (density direction)."""
        if work is not None:
            work.flow_passes += x.shape[-2]
        ladj = torch.zeros(x.shape[:-1], device=x.device, dtype=x.dtype)
        for layer in reversed(self.layers):
            x, l = layer.inverse(x)
            ladj = ladj + l
        return x, ladj



@dataclass
class FlowConfig:
    """The companion flow's shape and base, shared by the Configs of the flow-assisted algorithms:
    ``flow_layers`` couplings whose nets have ``flow_depth`` linear layers of ``flow_hidden`` units, base
    N(0, sigma^2 I) with sigma = ``base_scale``, or from the data when 0 (``data_base_scale``)."""

    base_scale: float = field(default=0.0, metadata=NONNEG)
    flow_layers: int = field(default=4, metadata=AT_LEAST_1)
    flow_hidden: int = field(default=16, metadata=AT_LEAST_1)
    flow_depth: int = field(default=2, metadata=AT_LEAST_1)
    #: image targets only (algorithms/image_flows.ImageFlow): scale levels (capped at what the image size
    #: allows), and the couplings; there ``flow_layers`` is the steps per level and ``flow_hidden`` the
    #: channels of the coupling networks (``flow_depth`` is not used)
    flow_levels: int = field(default=2, metadata=AT_LEAST_1)
    flow_coupling: Literal["affine", "additive"] = "affine"
    #: vector flows only: the couplings' split of the coordinates (``RealNVP``, ``MASKS``): the first and the
    #: second half, or the even and the odd coordinates
    flow_mask: Literal["half", "interleaved"] = "half"


def uses_image_flow(target) -> bool:
    """Whether ``flow_for`` builds the convolutional ``ImageFlow`` for this target (an image target, with a
    (C, H, W) ``shape``) rather than the vector RealNVP."""
    shape = getattr(target, "shape", None)
    return shape is not None and len(shape) == 3


def base_sigma(cfg: FlowConfig, data: Tensor) -> float:
    """The base's standard deviation: ``base_scale`` if set, else from the data (``data_base_scale``)."""
    return cfg.base_scale if cfg.base_scale > 0 else data_base_scale(data)


def flow_for(cfg: FlowConfig, data: Tensor, shape: tuple[int, ...] | None = None) -> nn.Module:
    """The flow a FlowConfig describes, on the data's device and dtype, starting at the identity map: the
    vector RealNVP, or for image data (``shape`` = (C, H, W), the target's) the convolutional multiscale
    ``ImageFlow`` with ``min(flow_levels, what H and W allow)`` levels."""
    if shape is not None and len(shape) == 3:
        levels = min(cfg.flow_levels, max_levels(shape))
        return ImageFlow(shape, levels, cfg.flow_layers, cfg.flow_hidden, cfg.flow_coupling,
                         base_sigma(cfg, data)).to(device=data.device, dtype=data.dtype)
    return RealNVP(data.shape[1], cfg.flow_layers, cfg.flow_hidden, cfg.flow_depth, base_sigma(cfg, data),
                   mask=cfg.flow_mask).to(device=data.device, dtype=data.dtype)


def data_base_scale(data: Tensor) -> float:
    """sigma = sqrt of the largest per-coordinate variance of the data (000 App. C.5's rule for the base,
    applied to the training data since the target density is not available to a training algorithm)."""
    return float(data.double().var(0).max().sqrt())


def fit_flow(flow: RealNVP, data: Tensor, n_steps: int, lr: float, batch_size: int, work: Work) -> float:
    """Pre-train ``flow`` by maximum likelihood on ``data`` (001 §3.3, 004 A.2 "pretrain a normalizing flow on
    training examples"): ``n_steps`` Adam steps on random mini-batches. Returns the last mean log-likelihood."""
    if n_steps <= 0:
        return float("nan")
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    ll = torch.tensor(float("nan"))
    for _ in range(n_steps):
        idx = torch.randint(0, data.shape[0], (min(batch_size, data.shape[0]),), device=data.device)
        ll = flow.log_prob(data[idx], work).mean()
        opt.zero_grad(set_to_none=True)
        (-ll).backward()
        opt.step()
    return float(ll.detach())


#: how a companion flow is pre-trained: on the data, or toward the target's exact density
PRETRAIN = ("max_likelihood", "reverse_kl")


def reverse_kl(flow: RealNVP, log_prob, n: int, work: Work | None = None) -> Tensor:
    """Monte Carlo estimate of KL(lambda || p) = E_{z ~ rho}[log rho(z) - log |det dT/dz| - log p(T z)] on n
    fresh base draws (reparameterised: differentiable in the flow's parameters). ``log_prob`` is the target's
    normalised log-density, so the estimate is the KL itself (>= 0 up to Monte Carlo error)."""
    z = flow.base_sample(n)
    x, ladj = flow(z, work)
    return (flow.base_log_prob(z) - ladj - log_prob(x.double()).to(x.dtype)).mean()


def pretrain_reverse_kl(flow: RealNVP, log_prob, n_steps: int, lr: float, batch_size: int, work: Work) -> float:
    """Pre-train ``flow`` by minimising the reverse KL to a target with a known density (000 C.3-C.4:
    "pretrained for 1024 steps at a 1e-2 learning rate with the reverse KL objective"): ``n_steps`` Adam
    steps on ``batch_size`` fresh base draws each. Returns the last reverse-KL estimate (nats)."""
    if n_steps <= 0:
        return float("nan")
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    kl = torch.tensor(float("nan"))
    for _ in range(n_steps):
        kl = reverse_kl(flow, log_prob, batch_size, work)
        opt.zero_grad(set_to_none=True)
        kl.backward()
        opt.step()
    return float(kl.detach())


def check_pretrain(how: str, target) -> None:
    """Reverse-KL pre-training needs the target's exact density: say so before anything is trained."""
    if how not in PRETRAIN:
        raise ValueError(f"pretrain must be one of {', '.join(PRETRAIN)}, got {how!r}")
    if how == "reverse_kl" and not target.has_density:
        raise ValueError(f"pretrain = 'reverse_kl' needs the target's exact density, and target "
                         f"{target.name!r} has none; use pretrain = 'max_likelihood'")


def pretrain_flow(flow: RealNVP, how: str, target, data: Tensor, n_steps: int, lr: float, batch_size: int,
                  work: Work) -> dict[str, float]:
    """Pre-train a companion flow as ``how`` says: "max_likelihood" on the training data (``fit_flow``) or
    "reverse_kl" toward the target's exact log-density (``pretrain_reverse_kl``). Returns the last value of
    the objective under its own name (``flow_pretrain_loglik`` or ``flow_pretrain_reverse_kl``)."""
    check_pretrain(how, target)
    if how == "reverse_kl":
        return {"flow_pretrain_reverse_kl": pretrain_reverse_kl(flow, target.log_prob, n_steps, lr, batch_size,
                                                                work)}
    return {"flow_pretrain_loglik": fit_flow(flow, data, n_steps, lr, batch_size, work)}
