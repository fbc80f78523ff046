"""Box-aware albumentations views of detection images: one geometry, then the photometric strong view.

- ``geometry(size, flip)``: resize to the model's square input and (training) a horizontal flip
  with p 0.5; boxes move with the image. This is the weak view (LPLD's spec: resize only; the
  Mean Teacher papers add the flip).
- ``photometric()``: LPLD's strong view, applied to the weak view's pixels so both share one
  geometry: colour jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, Gaussian blur sigma
  0.1-2 p 0.5, and three random-erasing passes ((p .7, scale .05-.2, ratio .3-3.3), (p .5,
  .02-.2, .1-6), (p .3, .02-.2, .05-8)) filled with random values, as torchvision's
  ``RandomErasing(value="random")`` in the official code.
Images stay on ``[0, 1]``: the detector's own transform normalises them.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ERASING_PASSES = (
    ((0.05, 0.2), (0.3, 3.3), 0.7),
    ((0.02, 0.2), (0.1, 6.0), 0.5),
    ((0.02, 0.2), (0.05, 8.0), 0.3),
)


def geometry(size: int, flip: bool) -> A.Compose:
    """Resize to ``size x size`` (and flip when ``flip``), moving ``pascal_voc`` boxes along."""
    ops = [A.Resize(size, size)] + ([A.HorizontalFlip(p=0.5)] if flip else [])
    return A.Compose(
        ops,
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels", "ignored"],
            clip=True,
            min_area=0.0,
            min_visibility=0.0,
        ),
    )


def photometric() -> A.Compose:
    """LPLD's strong view (see the module docstring); no geometric change."""
    erasing = [A.Erasing(scale=scale, ratio=ratio, fill="random", p=p) for scale, ratio, p in ERASING_PASSES]
    return A.Compose(
        [
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8),
            A.ToGray(p=0.2),
            A.GaussianBlur(sigma_limit=(0.1, 2.0), blur_limit=0, p=0.5),
            *erasing,
        ]
    )


def seed_views(pipeline: A.Compose, seed: int) -> None:
    """Seed ``pipeline`` so that its transforms draw independently. ``Compose.set_random_seed`` gives every
    transform the SAME seed, so their apply-probabilities are one shared draw (with p 0.8, 0.5 and 0.3,
    either all apply or none, 20% of samples get no strong view at all); here each gets its own."""
    pipeline.set_random_seed(seed)
    for position, transform in enumerate(pipeline.transforms):
        transform.set_random_seed((seed * 1_000_003 + 7919 * (position + 1)) % 2**32)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """``HxWx3 uint8 -> (3, H, W) float32`` on ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def apply_views(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    weak: A.Compose,
    strong: A.Compose | None,
    ignored: np.ndarray | None = None,
) -> dict:
    """``image HxWx3 uint8``, ``boxes (N, 4)``, ``labels (N,)``, ``ignored (N,)`` (default none)
    -> ``{"image", "boxes", "labels", "ignored"[, "strong"]}``:
    the weak view and its boxes, and the strong view of the same geometry when ``strong`` is given."""
    flags = np.zeros(len(labels), dtype=np.int64) if ignored is None else np.asarray(ignored, dtype=np.int64)
    out = weak(image=image, bboxes=boxes.reshape(-1, 4), labels=labels, ignored=flags)
    views = {
        "image": as_tensor(out["image"]),
        "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64)),
        "ignored": torch.as_tensor(np.asarray(out["ignored"], dtype=np.int64)),
    }
    if strong is not None:
        views["strong"] = as_tensor(strong(image=out["image"])["image"])
    return views
