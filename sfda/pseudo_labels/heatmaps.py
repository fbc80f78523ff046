"""Heatmap pseudo-labels for pose: peaks and their confidence, Gaussian heatmaps rendered at points,
and points moved between two views of one image through their affines (the heatmap geometry itself
is ``sfda.data.heatmaps``, re-exported here).

Coordinates: input pixels with integer pixel centres; a heatmap of side ``h`` for an input of side ``S``
has stride ``S / h`` and its pixel centres at ``(p + 0.5) * stride - 0.5`` input pixels.
"""

from __future__ import annotations

import torch

# re-exported: the pose methods read the heatmap geometry from here
from ..data.heatmaps import heatmap_sigma, render_heatmaps, to_heatmap_pixels, to_input_pixels  # noqa: F401


def heatmap_peaks(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, K, h, w) -> (coordinates (B, K, 2) x, y in heatmap pixels, peak values (B, K))`` (argmax)."""
    values, position = heatmaps.flatten(2).max(dim=2)
    width = heatmaps.shape[-1]
    return torch.stack([position % width, position // width], dim=-1).float(), values


def move_points(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """``(B, K, 2)`` points through per-sample ``(B, 2, 3)`` affines."""
    return points @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]


def view_to_view(to: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` affines taking input pixels of the view made by ``start`` (image -> view) to those of
    the view made by ``to``: ``to o start^-1``, exact."""
    linear = torch.linalg.inv(start[:, :, :2].double())
    inverse = torch.cat([linear, -linear @ start[:, :, 2:].double()], dim=2)
    out = torch.cat(
        [
            to[:, :, :2].double() @ inverse[:, :, :2],
            to[:, :, :2].double() @ inverse[:, :, 2:] + to[:, :, 2:].double(),
        ],
        dim=2,
    )
    return out.to(to.dtype)


def confident_joints(heatmaps: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's heatmaps ``(B, K, h, w)`` -> its peaks in heatmap pixels ``(B, K, 2)`` and ``(B, K)``
    weights: 1 where the peak value is at least ``threshold``."""
    peaks, values = heatmap_peaks(heatmaps)
    return peaks, (values >= threshold).float()
