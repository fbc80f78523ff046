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


def heatmap_sigma(heatmap_size: int) -> float:
    """SimpleBaseline's sigma 2 at a 64-pixel heatmap, scaled with the heatmap size."""
    return 2.0 * heatmap_size / 64


def render_heatmaps(
    points: torch.Tensor, weight: torch.Tensor, input_size: int, heatmap_size: int
) -> torch.Tensor:
    """``(..., K, 2)`` points in input pixels and ``(..., K)`` weights -> ``(..., K, h, h)`` Gaussian heatmaps
    (peak 1 at the point, sigma ``heatmap_sigma``), zero where the weight is 0."""
    centres = to_heatmap_pixels(points.double(), input_size, heatmap_size)
    grid = torch.arange(heatmap_size, dtype=torch.float64, device=points.device)
    two_var = 2 * heatmap_sigma(heatmap_size) ** 2
    gx = torch.exp(-((grid - centres[..., :1]) ** 2) / two_var)  # (..., K, h)
    gy = torch.exp(-((grid - centres[..., 1:]) ** 2) / two_var)
    maps = gy[..., :, None] * gx[..., None, :] * weight.double()[..., None, None]
    return maps.float()
