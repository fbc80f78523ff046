"""CoTTA's and RoTTA's test-time augmentations (KATANA's, Cohen et al. 2021) as ops on batched tensors, on
the batch's own device, reproducible whatever the number of processes.

The official ``get_tta_transforms`` (the same file in CoTTA and RoTTA) is a torchvision ``Compose``
applied to a whole batch at once: ONE draw of its parameters per call, shared by every image of the batch,
from the process's global random stream. Here each call draws its parameters from a generator seeded by
``key`` (the run seed, a step and a view number: the same on every process) and the per-pixel Gaussian
noise of each image from a hash of (``key``, the image's GLOBAL sample index), as
``sfda.models.keyed_dropout`` draws its masks: the same image at the same step is augmented the same way
however the global batch is split, and after a resume.

The chain on ``[0, 1]`` pixels (normalised images are mapped back first and normalised again after):
clip, colour jitter (brightness, contrast, saturation, hue, gamma in a random order; saturation and hue
leave a one-channel image as it is), edge padding by half the side, a random affine (rotation, translation
by up to 1/16 of the padded side, scale), a 5x5 Gaussian blur, a centre crop back to the input size, a
horizontal flip with probability 1/2, Gaussian noise of std 0.005, clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .keyed_dropout import keyed_uniform, mix64

NOISE_LAYER = 0x4E01_5E  # the hash salt of the per-pixel noise (apart from dropout's layer numbers)


@dataclass(frozen=True)
class JitterRanges:
    """The ranges of one strength of the official augmentations (``soft=False`` / ``soft=True``)."""

    brightness: tuple[float, float]
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    hue: tuple[float, float]
    gamma: tuple[float, float]
    degrees: float
    scale: tuple[float, float]
    blur_sigma: tuple[float, float]


STRONG = JitterRanges(brightness=(0.6, 1.4), contrast=(0.7, 1.3), saturation=(0.5, 1.5), hue=(-0.06, 0.06),
                      gamma=(0.7, 1.3), degrees=15.0, scale=(0.9, 1.1), blur_sigma=(0.001, 0.5))
SOFT = JitterRanges(brightness=(0.8, 1.2), contrast=(0.85, 1.15), saturation=(0.75, 1.25), hue=(-0.03, 0.03),
                    gamma=(0.85, 1.15), degrees=8.0, scale=(0.95, 1.05), blur_sigma=(0.001, 0.25))


def draw_key(*numbers: int) -> int:
    """A 63-bit key hashed from ``numbers`` (a run seed, a step, a view, a salt): distinct tuples give
    independent keys."""
    x = torch.zeros(1, dtype=torch.int64)
    for number in numbers:
        x = mix64(x ^ (int(number) & 0x7FFF_FFFF_FFFF_FFFF))
    return int(x) & 0x7FFF_FFFF_FFFF_FFFF


def _uniform(generator: torch.Generator, bounds: tuple[float, float]) -> float:
    return float(torch.empty(()).uniform_(bounds[0], bounds[1], generator=generator))


def _keyed_normal(key: int, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``(B, *shape)`` standard normal values, row b a hash of (``key``, ``index[b]``) (Box-Muller)."""
    salt = mix64(torch.tensor([key], dtype=torch.int64, device=index.device))
    u = keyed_uniform(mix64(index.long() ^ salt), (2, *shape), NOISE_LAYER)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))  # 1 - u in (0, 1]: finite
    return radius * torch.cos(2.0 * math.pi * u[:, 1])


def katana_augment(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], key: int,
                   index: torch.Tensor, soft: bool = False, flip: bool = True,
                   noise_std: float = 0.005) -> torch.Tensor:
    """One draw of the official augmentation chain (see the module docstring) applied to
    ``images (B, C, H, W)``, normalised with ``mean``/``std`` per channel; returns them normalised the same
    way.

    Args:
        key: the draw's key (``draw_key(run seed, step, view, ...)``): the parameters shared by the batch.
        index: ``(B,)`` global sample indices: each image's noise.
        soft: the official ``soft`` ranges (smaller jitter, rotation and scale).
        flip: whether the chain may flip horizontally (the official does, p = 1/2).
    """
    ranges = SOFT if soft else STRONG
    generator = torch.Generator().manual_seed(key)
    shape = (1, images.shape[1], *[1] * (images.dim() - 2))
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    x = (images.float() * s + m).clamp(0.0, 1.0)
    # ColorJitterPro: the five in a random order, each factor drawn as it is applied
    for op in torch.randperm(5, generator=generator).tolist():
        if op == 0:
            x = TF.adjust_brightness(x, _uniform(generator, ranges.brightness))
        elif op == 1:
            x = TF.adjust_contrast(x, _uniform(generator, ranges.contrast))
        elif op == 2:
            x = TF.adjust_saturation(x, _uniform(generator, ranges.saturation))
        elif op == 3:
            x = TF.adjust_hue(x, _uniform(generator, ranges.hue))
        else:  # the official clamps first: gamma of 0 after a contrast change has an infinite gradient
            x = TF.adjust_gamma(x.clamp(1e-8, 1.0), _uniform(generator, ranges.gamma))
    height, width = x.shape[-2:]
    pad = int(height / 2)
    x = F.pad(x, [pad, pad, pad, pad], mode="replicate")
    angle = _uniform(generator, (-ranges.degrees, ranges.degrees))  # torchvision RandomAffine's draw order
    max_dx, max_dy = x.shape[-1] / 16, x.shape[-2] / 16
    dx = int(round(_uniform(generator, (-max_dx, max_dx))))
    dy = int(round(_uniform(generator, (-max_dy, max_dy))))
    scale = _uniform(generator, ranges.scale)
    x = TF.affine(x, angle=angle, translate=[dx, dy], scale=scale, shear=[0.0, 0.0],
                  interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
    sigma = _uniform(generator, ranges.blur_sigma)
    x = TF.gaussian_blur(x, [5, 5], [sigma, sigma])
    x = TF.center_crop(x, [height, width])
    if float(torch.rand((), generator=generator)) < 0.5 and flip:
        x = x.flip(-1)
    x = x + noise_std * _keyed_normal(key, index, tuple(x.shape[1:]))
    return ((x.clamp(0.0, 1.0) - m) / s).to(images.dtype)
