"""Person crops, keypoint-aware views and Gaussian heatmap targets.

The geometry of a view is ONE affine matrix from image pixels to the model's input pixels: the
person's box, made square and padded 1.25x (SimpleBaseline's), then a random scale, rotation, shear
and horizontal flip about its centre. The image and its keypoints go through the same matrix, and a
flip swaps left and right joints. Writing the geometry as a matrix, rather than as albumentations'
``Affine`` + ``HorizontalFlip``, is deliberate: predictions go back to the original image, and the
Mean Teacher and pose SFDA map heatmaps between two views of one image, both through the exact
inverse, which albumentations does not return. Colour changes (albumentations' ``ColorJitter``)
follow the warp.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .heatmaps import render_heatmaps  # noqa: E402

PADDING = 1.25


@dataclass(frozen=True)
class Augment:
    """Random geometry and colour of a training view. Defaults: the pose SFDA release's schedule
    (rotation +-180 deg, shear +-30 deg, scale 0.6-1.3, colour jitter 0.25) with horizontal flips."""

    rotation: float = 180.0
    shear: float = 30.0
    scale: tuple[float, float] = (0.6, 1.3)
    colour: float = 0.25
    flip: bool = True

    def __post_init__(self):
        if not (0 < self.scale[0] <= self.scale[1]):
            raise ValueError(f"data.augment.scale: expected 0 < low <= high, got {self.scale}")
        for name in ("rotation", "shear", "colour"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"data.augment.{name}: expected a non-negative value, got {getattr(self, name)}"
                )

    def draw(self, rng: np.random.Generator) -> dict:
        """One view's random parameters."""
        return {
            "rotation": rng.uniform(-self.rotation, self.rotation),
            "shear": rng.uniform(-self.shear, self.shear),
            "scale": rng.uniform(*self.scale),
            "flip": bool(self.flip and rng.random() < 0.5),
        }


def crop_matrix(
    box: np.ndarray,
    size: int,
    rotation: float = 0.0,
    shear: float = 0.0,
    scale: float = 1.0,
    flip: bool = False,
) -> np.ndarray:
    """``(2, 3)`` affine from image pixels to ``size x size`` input pixels: the box's square, padded 1.25x,
    zoomed by ``scale`` (> 1: the person appears larger), rotated by ``rotation`` and sheared by ``shear``
    degrees about its centre, mirrored when ``flip``. Pixel centres are integers (x' = size - 1 - x)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    side = max(x1 - x0, y1 - y0) * PADDING
    zoom = size / side * scale
    theta, slope = math.radians(rotation), math.tan(math.radians(shear))
    rotate = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    linear = zoom * rotate @ np.array([[1.0, slope], [0.0, 1.0]])
    if flip:
        linear = np.diag([-1.0, 1.0]) @ linear
    middle = np.array([(size - 1) / 2, (size - 1) / 2])
    return np.hstack([linear, (middle - linear @ centre)[:, None]])


def invert(matrix: np.ndarray) -> np.ndarray:
    """The exact inverse of a ``(2, 3)`` affine."""
    linear = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear, -linear @ matrix[:, 2:]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer o inner`` of two ``(2, 3)`` affines."""
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(K, 2)`` points through a ``(2, 3)`` affine."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``H x W x C uint8`` image resampled to ``size x size`` through ``matrix`` (bilinear, black outside)."""
    import cv2

    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def view_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, size: int, flip_order: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``(K, 3)`` (image pixels, v) in a view: ``(K, 2)`` input pixels and ``(K,)`` labelled weight
    (1 where v > 0 and the point lies inside the view), joints reordered by ``flip_order`` when the view is
    mirrored."""
    points = warp_points(keypoints[:, :2], matrix)
    weight = ((keypoints[:, 2] > 0) & (points >= 0).all(axis=1) & (points <= size - 1).all(axis=1)).astype(
        np.float32
    )
    if flip_order is not None:
        points, weight = points[flip_order], weight[flip_order]
    return points, weight


def is_mirrored(matrix: np.ndarray) -> bool:
    return bool(np.linalg.det(matrix[:, :2]) < 0)


def heatmaps(
    points: np.ndarray, weight: np.ndarray, input_size: int, heatmap_size: int, sigma: float | None = None
) -> np.ndarray:
    """``(K, h, h) float32`` Gaussian targets at ``points (K, 2)`` (input pixels), zero where ``weight`` is 0
    (the engine's ``render_heatmaps``; ``sigma`` in heatmap pixels)."""
    maps = render_heatmaps(torch.from_numpy(points), torch.from_numpy(weight), input_size, heatmap_size,
                           sigma)
    return maps.numpy()


def colour_jitter(strength: float):
    """albumentations' colour jitter of ``strength`` on brightness, contrast and saturation (p 1), or None."""
    if strength <= 0:
        return None
    import albumentations as A

    return A.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=0.0, p=1.0)
