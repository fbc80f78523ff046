"""Gaussian heatmaps of pose keypoints and the coordinates between input and heatmap pixels: the
targets the pose data renders, and the geometry the pose engine reads peaks with. Torch only.

Coordinates: input pixels with integer pixel centres; a heatmap of side ``h`` for an input of side ``S``
has stride ``S / h`` and its pixel centres at ``(p + 0.5) * stride - 0.5`` input pixels.
"""

from __future__ import annotations

import torch


def to_input_pixels(points: torch.Tensor, input_size: int, heatmap_size: int) -> torch.Tensor:
    """Heatmap pixel coordinates -> input pixel coordinates."""
    stride = input_size / heatmap_size
    return (points + 0.5) * stride - 0.5


def to_heatmap_pixels(points: torch.Tensor, input_size: int, heatmap_size: int) -> torch.Tensor:
    """Input pixel coordinates -> heatmap pixel coordinates."""
    stride = input_size / heatmap_size
    return (points + 0.5) / stride - 0.5


MIN_SIGMA = 1.5  # heatmap pixels: below it a peak of 0.9 is rarely reached even by a perfect prediction
MIN_HEATMAP = 8  # heatmap pixels


def heatmap_sigma(heatmap_size: int) -> float:
    """The default Gaussian sigma in heatmap pixels: SimpleBaseline's 2 at a 64-pixel heatmap, scaled with
    the heatmap size, never below ``MIN_SIGMA`` (at 0.75 px on a 24-pixel heatmap a perfect prediction
    peaked at 0.9 or more on only 38% of joints, so the methods' 0.9 gates never opened)."""
    return max(MIN_SIGMA, 2.0 * heatmap_size / 64)


def render_heatmaps(
    points: torch.Tensor, weight: torch.Tensor, input_size: int, heatmap_size: int, sigma: float | None = None
) -> torch.Tensor:
    """``(..., K, 2)`` points in input pixels and ``(..., K)`` weights -> ``(..., K, h, h)`` Gaussian heatmaps
    (peak 1 at the point, ``sigma`` heatmap pixels, default ``heatmap_sigma``), zero where the weight is 0."""
    centres = to_heatmap_pixels(points.double(), input_size, heatmap_size)
    grid = torch.arange(heatmap_size, dtype=torch.float64, device=points.device)
    two_var = 2 * (sigma or heatmap_sigma(heatmap_size)) ** 2
    gx = torch.exp(-((grid - centres[..., :1]) ** 2) / two_var)  # (..., K, h)
    gy = torch.exp(-((grid - centres[..., 1:]) ** 2) / two_var)
    maps = gy[..., :, None] * gx[..., None, :] * weight.double()[..., None, None]
    return maps.float()
