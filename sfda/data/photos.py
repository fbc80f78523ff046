"""Real photographs bundled in installed packages (no download), for the semi-synthetic benchmarks'
target domains: scikit-learn's sample images and scikit-image's data photographs."""

from __future__ import annotations

import numpy as np

# scikit-image's bundled photographs (colour scenes; the grey ones are real surface photos)
SKIMAGE_COLOUR = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
SKIMAGE_GREY = ("brick", "grass", "gravel", "camera", "coins")


def sklearn_photographs() -> list[np.ndarray]:
    """scikit-learn's ``china.jpg`` and ``flower.jpg`` (``H x W x 3 uint8``)."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def skimage_photographs() -> list[np.ndarray]:
    """scikit-image's bundled photographs as ``H x W x 3 uint8`` (grey ones repeated over 3 channels)."""
    import skimage.data

    colour = [getattr(skimage.data, name)() for name in SKIMAGE_COLOUR]
    grey = [np.repeat(getattr(skimage.data, name)()[:, :, None], 3, axis=2) for name in SKIMAGE_GREY]
    return [np.ascontiguousarray(p[:, :, :3]) for p in colour] + grey


def random_crop(rng: np.random.Generator, photos: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """A ``height x width x 3`` float crop of a random photograph at a random place and scale
    (0.5-1.5x; a photograph smaller than the crop is tiled)."""
    photo = photos[rng.integers(len(photos))]
    scale = rng.uniform(0.5, 1.5)
    rows = (
        np.clip(np.arange(height) / scale + rng.integers(0, photo.shape[0]), 0, None).astype(int)
        % photo.shape[0]
    )
    cols = (
        np.clip(np.arange(width) / scale + rng.integers(0, photo.shape[1]), 0, None).astype(int)
        % photo.shape[1]
    )
    return photo[rows][:, cols].astype(np.float64)
