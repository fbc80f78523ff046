"""Photos as a camera saves them: stored turned, with the EXIF orientation that turns them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# the stored pixels of a displayed image D, per EXIF orientation: a viewer turns them back into D
STORED = {
    2: lambda d: d[:, ::-1],
    3: lambda d: d[::-1, ::-1],
    4: lambda d: d[::-1, :],
    5: lambda d: d.swapaxes(0, 1),
    6: lambda d: np.rot90(d, 1),
    7: lambda d: d[::-1, ::-1].swapaxes(0, 1),
    8: lambda d: np.rot90(d, -1),
}


def displayed(height: int = 24, width: int = 40) -> np.ndarray:
    """An asymmetric RGB picture (a bright block top-left, a gradient): every turn or flip changes it."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    picture[..., 1] = np.linspace(0, 150, height, dtype=np.uint8)[:, None]
    picture[2:8, 3:12] = 255
    return picture


def save_turned(path: Path, picture: np.ndarray, orientation: int, **options) -> Path:
    """Save ``picture`` as a camera does: stored turned, with the EXIF orientation that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(STORED[orientation](picture))).save(path, exif=exif, **options)
    return path
