"""A convolutional, multiscale normalizing flow for images (Glow / RealNVP style), the image companion of
NT-EBM (001: a Glow backbone), CoopFlow (004: a Flow++ flow) and flowMC-EBM (000 App. C.6: a RealNVP).

It has the interface of the vector flow (algorithms/flows.RealNVP): it maps *flattened* images, tensors of
shape (n, C*H*W) in the suite's image layout, so every algorithm, sampler and metric that works on vectors
works on it unchanged; ``shape`` = (C, H, W) says how to read a row as an image.

The generative direction is x = T(z), z ~ N(0, sigma^2 I) of the same dimension; log lambda(x) =
log rho(T^-1 x) + log |det J_{T^-1}(x)|. The density direction (x -> z) of one scale level is Glow's
(Kingma & Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions", 2018; Dinh et al., "Density
estimation using Real NVP", 2017):

    squeeze (C, H, W) -> (4C, H/2, W/2);  K steps of [ActNorm, invertible 1x1 convolution, coupling];
    split the channels in half: the first half leaves as latent coordinates, the second enters the next level.

The last level has no split. The latent coordinates are put back where their pixels came from (the inverse
squeezes), so z has the image's layout and, at initialisation, T is *exactly* the identity map: ActNorm starts
at scale 1 / shift 0 (no data-dependent initialisation, which would break that), the 1x1 convolution is
LU-parameterised (W = P L (U + diag(sign * exp(log_s)))) with P = L = I, U = 0, log_s = 0, and the last
convolution of every coupling network is zeroed. This is what 000 §3 needs (T_alpha0 = Id) and what the
vector RealNVP does. Couplings alternate which half of the channels they transform (even steps the second
half, odd steps the first), so no fixed channel permutation is needed and the identity start holds.

Couplings: ``"affine"`` b' = b exp(s(a)) + t(a) with a tanh-bounded log-scale s = B tanh(s_raw / B) (as the
vector flow), or ``"additive"`` b' = b + t(a) (001 A.3-A.4: Glow with ``flow_coupling = 0``, additive). The
coupling network is conv3x3(hidden) - ReLU - conv1x1(hidden) - ReLU - conv3x3(zeroed), as Glow's.

Not applied (the papers' flows have them; the suite's data are already in [-1, 1] and continuous enough for a
benchmark of EBM training): dequantisation, the logit pre-transform of RealNVP / 000 C.6, Glow's learned
prior for the factored-out latents (001 disables it too), Flow++'s variational dequantisation, attention and
logistic-mixture couplings. So 004's "Flow++" and 000's RealNVP are both this flow at their sizes (the suite
file says which sizes); the flow is *Flow++-like* only in being a multiscale coupling flow.

Written here rather than taken from a library: zuko 1.6 has no image (convolutional, multiscale) flows, and
normflows 1.7.3 (which has Glow blocks) ships only as a source distribution; its Glow blocks use
data-dependent ActNorm initialisation and a random 1x1 convolution, so it does not start at the identity
map, and it would add an sdist-only build dependency to CI for ~200 lines of code.

Work: every evaluation of the map in either direction adds one ``flow_passes`` per sample, as the vector flow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms.flow_base import GaussianBase
from algorithms.work import Work

COUPLINGS = ("affine", "additive")


def squeeze(x: Tensor) -> Tensor:
    """(n, C, H, W) -> (n, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """The inverse of ``squeeze``."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, 2 * h, 2 * w)


def max_levels(shape: tuple[int, int, int]) -> int:
    """How many squeezes an image of this shape allows (H and W divisible by 2 each time)."""
    _, h, w = shape
    k = 0
    while h % 2 == 0 and w % 2 == 0 and h > 1 and w > 1:
        h, w, k = h // 2, w // 2, k + 1
    return k


class ActNorm(nn.Module):
    """y = x * exp(logs) + loc per channel; starts at the identity (no data-dependent initialisation)."""

    def __init__(self, c: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, c, 1, 1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hw = x.shape[2] * x.shape[3]
        return x * self.logs.exp() + self.loc, (hw * self.logs.sum()).expand(x.shape[0])

    def decode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        hw = y.shape[2] * y.shape[3]
        return (y - self.loc) * torch.exp(-self.logs), (-hw * self.logs.sum()).expand(y.shape[0])


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution, LU-parameterised: W = L (U + diag(sign exp(log_s))), L unit lower
    triangular, U strictly upper triangular (P = I). Starts at W = I; log |det| = H W sum(log_s)."""

    def __init__(self, c: int):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(c, c))
        self.upper = nn.Parameter(torch.zeros(c, c))
        self.log_s = nn.Parameter(torch.zeros(c))
        self.register_buffer("sign", torch.ones(c))
        self.register_buffer("l_mask", torch.tril(torch.ones(c, c), -1))
        self.register_buffer("eye", torch.eye(c))

    def weight(self) -> Tensor:
        low = self.lower * self.l_mask + self.eye
        up = self.upper * self.l_mask.T + torch.diag(self.sign * self.log_s.exp())
        return low @ up

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weight()
        hw = x.shape[2] * x.shape[3]
        return F.conv2d(x, w[:, :, None, None]), (hw * self.log_s.sum()).expand(x.shape[0])

    def decode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        w_inv = torch.linalg.inv(self.weight())
        hw = y.shape[2] * y.shape[3]
        return F.conv2d(y, w_inv[:, :, None, None]), (-hw * self.log_s.sum()).expand(y.shape[0])


class ConvCoupling(nn.Module):
    """b' = b exp(s(a)) + t(a) (affine) or b' = b + t(a) (additive) on one half of the channels, given the
    other; ``parity`` 0 transforms the second half, 1 the first."""

    def __init__(self, c: int, hidden: int, coupling: str, parity: int, scale_bound: float):
        super().__init__()
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {', '.join(COUPLINGS)}, got {coupling!r}")
        self.c_a = c // 2 if parity == 0 else c - c // 2
        self.c_b = c - self.c_a
        self.parity, self.affine, self.scale_bound = parity, coupling == "affine", scale_bound
        out = self.c_b * (2 if self.affine else 1)
        self.net = nn.Sequential(
            nn.Conv2d(self.c_a, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, out, 3, padding=1))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.parity == 0:
            return x[:, :self.c_a], x[:, self.c_a:]
        return x[:, self.c_b:], x[:, :self.c_b]

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], 1)

    def _st(self, a: Tensor) -> tuple[Tensor | None, Tensor]:
        h = self.net(a)
        if not self.affine:
            return None, h
        s, t = h[:, :self.c_b], h[:, self.c_b:]
        bnd = self.scale_bound
        return bnd * torch.tanh(s / bnd), t

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self._split(x)
        s, t = self._st(a)
        if s is None:
            return self._join(a, b + t), x.new_zeros(x.shape[0])
        return self._join(a, b * s.exp() + t), s.flatten(1).sum(-1)

    def decode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self._split(y)
        s, t = self._st(a)
        if s is None:
            return self._join(a, b - t), y.new_zeros(y.shape[0])
        return self._join(a, (b - t) * torch.exp(-s)), -s.flatten(1).sum(-1)


class FlowStep(nn.Module):
    """One Glow step in the density direction: ActNorm, 1x1 convolution, coupling."""

    def __init__(self, c: int, hidden: int, coupling: str, parity: int, scale_bound: float):
        super().__init__()
        self.parts = nn.ModuleList([ActNorm(c), InvConv1x1(c), ConvCoupling(c, hidden, coupling, parity,
                                                                             scale_bound)])

    def encode(self, x):
        ladj = 0
        for p in self.parts:
            x, l = p.encode(x)
            ladj = ladj + l
        return x, ladj

    def decode(self, y):
        ladj = 0
        for p in reversed(self.parts):
            y, l = p.decode(y)
            ladj = ladj + l
        return y, ladj


class ImageFlow(GaussianBase, nn.Module):
    """Multiscale Glow-style flow on flattened images of shape (C, H, W), base N(0, sigma^2 I).

    ``n_levels`` scale levels of ``n_steps`` steps each; coupling networks of ``hidden`` channels. 001 A.3 for
    CIFAR-10: n_levels = 3, depth (n_steps) = 16, width (hidden) = 512, additive couplings."""

    def __init__(self, shape: tuple[int, int, int], n_levels: int = 2, n_steps: int = 4, hidden: int = 32,
                 coupling: str = "affine", base_scale: float = 1.0, scale_bound: float = 2.0,
                 identity_init: bool = True):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise ValueError(f"ImageFlow needs an image shape (C, H, W), got {shape}")
        if not 1 <= n_levels <= max_levels(shape):
            raise ValueError(f"an image of shape {shape} allows 1 to {max_levels(shape)} levels of 2x2 squeezes, "
                             f"got n_levels = {n_levels}")
        if base_scale <= 0:
            raise ValueError(f"base_scale must be positive, got {base_scale}")
        self.shape = shape
        self.dim = math.prod(shape)
        self.n_levels = n_levels
        c = shape[0]
        self.levels = nn.ModuleList()
        for i in range(n_levels):
            c *= 4
            self.levels.append(nn.ModuleList(FlowStep(c, hidden, coupling, k % 2, scale_bound)
                                             for k in range(n_steps)))
            if i < n_levels - 1:
                c -= c // 2  # the first half leaves; c - c // 2 channels go on
        self.register_buffer("base_scale", torch.tensor(float(base_scale)))
        if identity_init:
            for level in self.levels:
                for step in level:
                    last = step.parts[2].net[-1]
                    nn.init.zeros_(last.weight)
                    nn.init.zeros_(last.bias)

    def _image(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    # ----------------------------------------------------------------- the two directions on images
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images x (n, C, H, W) -> latents z in the same layout, and log |det dz/dx|."""
        ladj = x.new_zeros(x.shape[0])
        out, h = [], x
        last = self.n_levels - 1
        for i, level in enumerate(self.levels):
            h = squeeze(h)
            for step in level:
                h, l = step.encode(h)
                ladj = ladj + l
            if i < last:
                a, h = h[:, :h.shape[1] // 2], h[:, h.shape[1] // 2:]
                out.append(a)
        for i in range(last, -1, -1):
            if i < last:
                h = torch.cat([out[i], h], 1)
            h = unsqueeze(h)
        return h, ladj

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Latents z (n, C, H, W) -> images x, and log |det dx/dz|."""
        ladj = z.new_zeros(z.shape[0])
        out, h = [], z
        last = self.n_levels - 1
        for i in range(self.n_levels):
            h = squeeze(h)
            if i < last:
                a, h = h[:, :h.shape[1] // 2], h[:, h.shape[1] // 2:]
                out.append(a)
        for i in range(last, -1, -1):
            if i < last:
                h = torch.cat([out[i], h], 1)
            for step in reversed(self.levels[i]):
                h, l = step.decode(h)
                ladj = ladj + l
            h = unsqueeze(h)
        return h, ladj

    # ----------------------------------------------------------------- the vector-flow interface
    def forward(self, z: Tensor, work: Work | None = None) -> tuple[Tensor, Tensor]:
        """x = T(z) and log |det dT/dz| on flattened images (sampling direction)."""
        if work is not None:
            work.flow_passes += z.shape[0]
        x, ladj = self.decode(self._image(z))
        return x.reshape(z.shape[0], -1), ladj

    def inverse(self, x: Tensor, work: Work | None = None) -> tuple[Tensor, Tensor]:
        """z = T^-1(x) and log |det dT^-1/dx| on flattened images (density direction)."""
        if work is not None:
            work.flow_passes += x.shape[0]
        z, ladj = self.encode(self._image(x))
        return z.reshape(x.shape[0], -1), ladj


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
