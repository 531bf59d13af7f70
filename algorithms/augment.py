"""Random image augmentations of persistent chain states: the "PCD with data augmentation" of Carbone, Hua, Coste,
Vanden-Eijnden, "Efficient training of energy-based models using Jarzynski equality" (NeurIPS 2023), §4.3 and
Table 1, second row. 003 §4.3 names the augmentation of Du, Li, Tenenbaum, Mordatch, "Improved contrastive
divergence training of energy-based models" (ICML 2021): "a combination of color distortion, horizontal flip,
rescaling, and Gaussian blur augmentations, to help the mixing of the MCMC sampling". In Du et al. these are
transitions of the sampler: they act on the chain states drawn from the replay buffer before the Langevin steps,
never on the data batches. 003 gives no parameters; ``du2021`` takes Du et al.'s CIFAR-10 ones (random resized
crop of area 0.08-1 rescaled back, flip p = 1/2, colour jitter 0.8 brightness / contrast / saturation with
p = 0.8, grayscale p = 0.2, Gaussian blur kernel 5, sigma U(0.1, 2) with p = 1/2). Hue jitter is not implemented.

Images are flattened (n, C*H*W) with pixels in [-1, 1]; ``shape`` is (C, H, W). Every draw comes from
``generator`` (torch's global one when None), on the CPU, so a fixed generator gives a fixed augmentation.

Written by hand rather than with torchvision's transforms: those draw one set of parameters per call (one crop,
one jitter for a whole batch) or loop in Python image by image, while each chain state here draws its own, for
the whole batch at once. The operations are torchvision's definitions (adjust_brightness / contrast /
saturation, rgb_to_grayscale, gaussian_blur), which tests/test_pcd_augment.py checks image by image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("none", "flip", "du2021")


def _u(n: int, generator, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def flip_mask(n: int, generator=None, p: float = 0.5) -> Tensor:
    """Which of n images are flipped left-right: each independently with probability p."""
    return torch.rand(n, generator=generator) < p


def hflip(imgs: Tensor, mask: Tensor) -> Tensor:
    """imgs (n, C, H, W) with those where ``mask`` is true mirrored left-right."""
    return torch.where(mask.to(imgs.device).view(-1, 1, 1, 1), imgs.flip(-1), imgs)


def resized_crop(imgs: Tensor, generator=None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> Tensor:
    """A random crop of area fraction U(scale) and aspect ratio log-U(ratio), rescaled to the full size (bilinear)."""
    n, _, h, w = imgs.shape
    area = _u(n, generator, *scale)
    r = torch.exp(_u(n, generator, math.log(ratio[0]), math.log(ratio[1])))
    fw = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
    fh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (2 * _u(n, generator) - 1) * (1 - fw)  # centre in [-1, 1] coordinates, the crop inside the image
    cy = (2 * _u(n, generator) - 1) * (1 - fh)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = fw, cx, fh, cy
    grid = F.affine_grid(theta.to(imgs), list(imgs.shape), align_corners=False)
    return F.grid_sample(imgs, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(u: Tensor) -> Tensor:
    if u.shape[1] != 3:
        return u.mean(1, keepdim=True)
    wts = torch.tensor([0.299, 0.587, 0.114], dtype=u.dtype, device=u.device).view(1, 3, 1, 1)
    return (u * wts).sum(1, keepdim=True)


def color_distortion(u: Tensor, generator=None, s: float = 1.0, p_jitter: float = 0.8,
                     p_gray: float = 0.2) -> Tensor:
    """Du et al.'s colour distortion on pixels u in [0, 1]: with probability p_jitter brightness, contrast and
    saturation factors U(1 - 0.8 s, 1 + 0.8 s) (in that order), then grayscale with probability p_gray (colour
    images only)."""
    n = u.shape[0]

    def col(t):
        return t.to(u).view(-1, 1, 1, 1)

    jit = col(torch.rand(n, generator=generator) < p_jitter)
    b, c, sat = (_u(n, generator, 1 - 0.8 * s, 1 + 0.8 * s) for _ in range(3))
    v = (u * col(b)).clamp(0, 1)
    v = ((v - _gray(v).mean((2, 3), keepdim=True)) * col(c) + _gray(v).mean((2, 3), keepdim=True)).clamp(0, 1)
    if u.shape[1] == 3:
        g = _gray(v)
        v = ((v - g) * col(sat) + g).clamp(0, 1)
    u = jit * v + (1 - jit) * u
    gray = torch.rand(n, generator=generator) < p_gray
    if u.shape[1] == 3:
        u = torch.where(gray.to(u.device).view(-1, 1, 1, 1), _gray(u).expand_as(u), u)
    return u


def gaussian_blur(u: Tensor, generator=None, p: float = 0.5, sigma=(0.1, 2.0), kernel: int = 5) -> Tensor:
    """With probability p a Gaussian blur of kernel ``kernel`` and sigma U(sigma) (separable, reflect padding)."""
    n, c, h, w = u.shape
    on = torch.rand(n, generator=generator) < p
    sig = _u(n, generator, *sigma)
    r = torch.arange(kernel, dtype=torch.float32) - (kernel - 1) / 2
    k = torch.exp(-r.view(1, -1) ** 2 / (2 * sig.view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).to(u)  # (n, kernel)
    k = k.repeat_interleave(c, 0)  # one kernel per (image, channel)
    pad = kernel // 2
    x = u.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(n * c, 1, 1, kernel), groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(n * c, 1, kernel, 1), groups=n * c)
    return torch.where(on.to(u.device).view(-1, 1, 1, 1), x.view(n, c, h, w), u)


def augment(x: Tensor, shape, kind: str, generator=None) -> Tensor:
    """The augmentation ``kind`` (one of KINDS) of flattened images x (n, C*H*W) in [-1, 1]. ``none`` returns x
    itself and draws nothing."""
    if kind == "none":
        return x
    if kind not in KINDS:
        raise ValueError(f"augment must be one of {', '.join(KINDS)}, got {kind!r}")
    n = x.shape[0]
    imgs = x.reshape(n, *shape)
    if kind == "flip":
        return hflip(imgs, flip_mask(n, generator)).reshape(n, -1)
    u = ((imgs + 1) / 2).clamp(0, 1)
    u = resized_crop(u, generator)
    u = hflip(u, flip_mask(n, generator))
    u = color_distortion(u, generator)
    u = gaussian_blur(u, generator)
    return (2 * u - 1).reshape(n, -1)
