"""Convolutional energies for images (the suite's image convention: flattened inputs (n, C*H*W) in [-1, 1],
reshaped here to (n, C, H, W); see datasets/images.py).

``Conv003``: 003 §4.2's MNIST energy, "a simple six-layer convolutional neural network with the swish
activation and about 77K parameters". 003 gives no more detail, so the layers are this suite's reading: five
convolutions and a final linear layer, swish (SiLU) after each convolution,

    conv 3x3 C->w, conv 4x4/2 w->2w, conv 3x3 2w->2w, conv 4x4/2 2w->4w, conv 3x3/2 4w->3w, linear -> 1

with w = 16 for 28x28 (28 -> 14 -> 7 -> 4): 78,929 parameters, the closest round sizing to 003's ~77k.
``Conv003Small`` is the same network sized down for 8x8 images (w = 8; 8 -> 4 -> 2 -> 1): 19,649 parameters.
The last layer is an ``nn.Linear``, so Jarzynski's ``reference_std`` start (E_theta0 = 0) applies.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from algorithms.energies import Energy


def image_shape(dim: int) -> tuple[int, int, int]:
    """(C, H, W) of a flattened square image: one channel when dim is a square, else three (dim = 3 s^2)."""
    s = math.isqrt(dim)
    if s * s == dim:
        return (1, s, s)
    s = math.isqrt(dim // 3)
    if dim % 3 == 0 and 3 * s * s == dim:
        return (3, s, s)
    raise ValueError(f"a convolutional energy needs square images (dim = s^2 or 3 s^2), got dim = {dim}")


class Conv003(Energy):
    """003 §4.2's six-layer swish CNN energy (module docstring), on flattened square images."""

    summary = "003 §4.2's six-layer swish CNN for MNIST (78,929 parameters at 28x28)"

    width = 16
    stand_in = ("our reading of 003's 'six-layer convolutional neural network with the swish activation and about "
                "77K parameters' (003 gives no layer list; 78,929 parameters at 28x28)")

    def __init__(self, dim: int = 784, width: int | None = None):
        super().__init__()
        self.shape = image_shape(dim)
        c, h, _ = self.shape
        w = width or self.width
        convs = [nn.Conv2d(c, w, 3, 1, 1), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.Conv2d(2 * w, 2 * w, 3, 1, 1),
                 nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.Conv2d(4 * w, 3 * w, 3, 2, 1)]
        layers = []
        for conv in convs:
            layers += [conv, nn.SiLU()]
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_feat = self.features(torch.zeros(1, *self.shape)).numel()
        self.out = nn.Linear(n_feat, 1)

    def forward(self, x):
        f = self.features(x.reshape(-1, *self.shape))
        return self.out(f.flatten(1)).squeeze(-1)


class Conv003Small(Conv003):
    """Conv003 sized down for 8x8 images (w = 8)."""

    summary = "003's six-layer swish CNN sized down for 8x8 images (w = 8)"

    width = 8
    stand_in = "003's energy as we read it, sized down (w = 8) for the 8x8 digits: this suite's"


# ===========================================================================================================
# The papers' CIFAR-10 energies (issue 13): 001's ConvNet with LipSwish, the residual EBM of 004 (and 000 C.6),
# 003's CIFAR energy (the short-run ConvNet of Nijkamp et al. 2019). Each is sized by a width parameter; the
# registered names give the papers' width ("..." ) and the suite's small width ("..._small", quick/smoke).
# On images smaller than 32x32 the stride-2 stages stop once the feature map is below 8x8 pixels and the last
# layer covers what is left, so the same family runs on 8x8 digits and 28x28 Fashion-MNIST.
# ===========================================================================================================


def image_shape_of(dim: int, shape=None) -> tuple[int, int, int]:
    """The (C, H, W) of a flattened image: the target's ``shape`` when given, else ``image_shape(dim)``."""
    if shape is None:
        return image_shape(dim)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or math.prod(shape) != dim:
        raise ValueError(f"image shape {shape} does not match dimension {dim}")
    return shape


class LipSwish(nn.Module):
    """Swish(x) / 1.1 (Chen et al. 2019, "Residual flows"), 001 A.3's activation."""

    def forward(self, x):
        return torch.nn.functional.silu(x) / 1.1


class ImageEnergy(Energy):
    """Flattened images in, E_theta out; subclasses build ``self.net`` on (n, C, H, W)."""

    image = True

    def __init__(self, dim: int, shape=None):
        super().__init__()
        self.shape = image_shape_of(dim, shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], *self.shape)).flatten(1).sum(-1)


def _downsampling_stages(side: int, n_max: int) -> int:
    """How many stride-2 stages (4x4 convolutions, padding 1) to apply: at most n_max, while the map is >= 8."""
    k = 0
    while k < n_max and side >= 8:
        side, k = side // 2, k + 1
    return k


class StridedConvEnergy(ImageEnergy):
    """3x3 conv(nf) - act - [4x4 conv stride 2 (m_i nf) - act]... - conv(1) over the remaining map. The
    shared shape of 001 Table 4 and of Nijkamp et al. 2019's short-run ConvNet."""

    def __init__(self, dim: int, shape=None, nf: int = 32, mults=(2, 4, 4), act=LipSwish):
        super().__init__(dim, shape)
        c, h, w = self.shape
        k = _downsampling_stages(min(h, w), len(mults))
        layers: list[nn.Module] = [nn.Conv2d(c, nf, 3, 1, 1), act()]
        ch = nf
        for m in mults[:k]:
            layers += [nn.Conv2d(ch, m * nf, 4, 2, 1), act()]
            ch = m * nf
            h, w = h // 2, w // 2
        layers.append(nn.Conv2d(ch, 1, (h, w), 1, 0))
        self.net = nn.Sequential(*layers)


class ConvNetLipSwish(StridedConvEnergy):
    """001 A.3 Table 4 (NT-EBM / NCE-EBM on 32x32x3): 3x3 conv(n_f), 4x4 conv(2 n_f) /2, 4x4 conv(4 n_f) /2,
    4x4 conv(4 n_f) /2, 4x4 conv(1); LipSwish after every layer but the last; n_f = 32 on CIFAR-10 (001 A.3)."""

    summary = "001 Table 4's ConvNet with LipSwish (n_f = 32)"

    def __init__(self, dim: int, shape=None, nf: int = 32):
        super().__init__(dim, shape, nf, (2, 4, 4), LipSwish)


class ShortRunConvNet(StridedConvEnergy):
    """003 §4.3 ("the setup of [Nijkamp et al. 2019] with the same neural architecture with n_f = 128"): that
    paper's ConvNet, 3x3 conv(n_f), 4x4 conv(2 n_f) /2, 4x4 conv(4 n_f) /2, 4x4 conv(8 n_f) /2, 4x4 conv(1),
    LeakyReLU(0.2) after every layer but the last. The layer list is Nijkamp et al.'s network as we read it
    (003 does not print it)."""

    summary = "Nijkamp et al. 2019's short-run ConvNet that 003 uses on CIFAR-10 (n_f = 128, LeakyReLU)"

    def __init__(self, dim: int, shape=None, nf: int = 128):
        super().__init__(dim, shape, nf, (2, 4, 8), lambda: nn.LeakyReLU(0.2))


class _ResBlock(nn.Module):
    """004 Table 2(b): h = swish(conv3x3(swish(conv3x3(x)))) + swish(conv3x3(x)), then 2x2 average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.act = nn.SiLU()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        h = self.act(self.c2(self.act(self.c1(x)))) + self.act(self.skip(x))
        return self.pool(h)


class ResidualEBM(ImageEnergy):
    """004 A.1 Table 2 (CoopFlow's EBM, which 000 C.6 uses for flowMC-EBM "with a smaller last layer"): 3x3
    conv(ch) + swish; residual blocks of 2 ch, 4 ch, 8 ch channels, each ending in 2x2 average pooling; 3x3
    conv stride 4, padding 0, ``n_out`` channels + swish; the energy is minus the sum over channels
    (f_theta = the sum; E = -f). 004: ch = 128, n_out = 100. 000 C.6 gives only its total (about 4.5M
    parameters) for a "smaller last MLP layer": not reproducible from the text; its size here is ch = 128
    with the same last layer (see the suite file for what each fidelity uses). On smaller images the blocks
    stop at a 4x4 map (one block at 8x8), and the last layer's output is summed over what is left."""

    summary = "004 Table 2's residual EBM (ch = 128), also flowMC-EBM's on images (000 C.6)"

    def __init__(self, dim: int, shape=None, ch: int = 128, n_out: int = 100):
        super().__init__(dim, shape)
        c, h, w = self.shape
        k = 0
        while k < 3 and min(h, w) // 2 >= 4:
            h, w, k = h // 2, w // 2, k + 1
        layers: list[nn.Module] = [nn.Conv2d(c, ch, 3, 1, 1), nn.SiLU()]
        c_in = ch
        for i in range(k):
            layers.append(_ResBlock(c_in, ch * 2 ** (i + 1)))
            c_in = ch * 2 ** (i + 1)
        layers += [nn.Conv2d(c_in, n_out, 3, 4, 0), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return -super().forward(x)


#: the small widths are the suite's, for the quick and smoke fidelities
SMALL = "a paper's network at a small width for quick runs: this suite's"

#: the papers' widths and the suite's small ones (quick / smoke fidelities)
PAPER_IMAGE_ENERGIES = {
    "convnet_lipswish": ConvNetLipSwish,  # 001, n_f = 32
    "convnet_lipswish_small": ConvNetLipSwish.with_params("001 Table 4's LipSwish ConvNet at n_f = 8 (quick, smoke)",
                                                          nf=8, stand_in=SMALL),
    "resnet_ebm": ResidualEBM,  # 004 / 000 C.6, ch = 128
    "resnet_ebm_small": ResidualEBM.with_params("004's residual EBM at ch = 8, 16 outputs (quick, smoke)", ch=8,
                                                n_out=16, stand_in=SMALL),
    "shortrun_convnet": ShortRunConvNet,  # 003 CIFAR-10, n_f = 128
    "shortrun_convnet_small": ShortRunConvNet.with_params("the short-run ConvNet at n_f = 8 (quick, smoke)", nf=8,
                                                          stand_in=SMALL),
    # 002 A.2 Table 2, CIFAR-10 column: 3x3 conv(nf), 4x4 conv(2 nf) /2, 4x4 conv(4 nf) /2, 4x4 conv(8 nf) /2,
    # flatten + FC to a scalar (here a convolution over the whole remaining map: the same map), swish after
    # each convolution, nf = 64
    "convnet_swish": StridedConvEnergy.with_params("002 Table 2's CIFAR-10 ConvNet: strided convolutions with swish, "
                                                   "n_f = 64", nf=64, mults=(2, 4, 8), act=nn.SiLU),
    "convnet_swish_small": StridedConvEnergy.with_params("that strided swish ConvNet at n_f = 8 (quick, smoke)", nf=8,
                                                         mults=(2, 4, 8), act=nn.SiLU, stand_in=SMALL),
}
#: the image energies; bench.registry registers them
BUILT_IN = {"conv003": Conv003, "conv003_small": Conv003Small, **PAPER_IMAGE_ENERGIES}
