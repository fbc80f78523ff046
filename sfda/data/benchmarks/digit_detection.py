"""Semi-synthetic digit detection: MNIST digits pasted on canvases, with boxes, in two domains.

SEMI-SYNTHETIC: the digits are real handwriting (MNIST) and the target backgrounds are real
photographs, but the scenes are generated. Name it so wherever a number from it is reported.

- ``plain`` (source): grey digits on plain dark canvases (a uniform level in [0, 40] plus faint noise).
- ``photo`` (target): digits composited on crops of real colour photographs (scikit-learn's bundled
  ``china.jpg`` and ``flower.jpg``) as ``|photo - digit|``, the MNIST-M recipe, in colour.

Each canvas holds 2-5 digits at scales of 20-44 pixels (on a 128-pixel canvas), placed with little
overlap; a box is the tight extent of the digit's strokes. Source digits come from the first half
of MNIST train, target training digits from the second half, target test digits from MNIST test.
Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed writes the same files.
Output: ``<root>/digit_detection/<domain>_<split>/`` PNGs and ``annotations.json`` (COCO), read by the
same loader as a user's data (``DetectionDataModule``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..digits import load_digits_split
from ..fetch import register_generated, write_json
from ..photos import sklearn_photographs

CANVAS = 128
SCALES = (20, 44)
DIGITS_PER_IMAGE = (2, 5)
COUNTS = {("plain", "train"): 2000, ("photo", "train"): 2000, ("photo", "test"): 500}
SEEDS = {("plain", "train"): 101, ("photo", "train"): 202, ("photo", "test"): 303}


def digit_pool(domain: str, split: str, root: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits of this domain and split (disjoint between source, target train and target test)."""
    images, labels = load_digits_split("mnist", "test" if split == "test" else "train", root)
    if split == "test":
        return images, labels
    half = len(images) // 2
    part = slice(0, half) if domain == "plain" else slice(half, None)
    return images[part], labels[part]


def place(
    rng: np.random.Generator, size: int, taken: list[np.ndarray], tries: int = 30
) -> tuple[int, int] | None:
    """Top-left corner for a ``size`` square overlapping no placed box by more than 10% of its area."""
    for _ in range(tries):
        x, y = rng.integers(0, CANVAS - size + 1, size=2)
        box = np.array([x, y, x + size, y + size])
        if all(overlap(box, other) <= 0.1 * size * size for other in taken):
            return int(x), int(y)
    return None


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area of two xyxy boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(0, w) * max(0, h))


def background(rng: np.random.Generator, domain: str, photos: list[np.ndarray]) -> np.ndarray:
    """A ``CANVAS x CANVAS x 3`` float background of the domain."""
    if domain == "plain":
        level = rng.uniform(0, 40)
        return np.clip(level + rng.normal(0, 3, (CANVAS, CANVAS, 1)), 0, 255).repeat(3, axis=2)
    photo = photos[rng.integers(len(photos))]
    y = rng.integers(0, photo.shape[0] - CANVAS + 1)
    x = rng.integers(0, photo.shape[1] - CANVAS + 1)
    crop = photo[y : y + CANVAS, x : x + CANVAS].astype(np.float64)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def render(
    rng: np.random.Generator, domain: str, digits: np.ndarray, labels: np.ndarray, photos: list[np.ndarray]
) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """One canvas: ``(image HxWx3 uint8, boxes xyxy, digit labels)``."""
    from PIL import Image

    canvas = background(rng, domain, photos)
    strokes = np.zeros((CANVAS, CANVAS), dtype=np.float64)
    boxes, names, taken = [], [], []
    for _ in range(rng.integers(DIGITS_PER_IMAGE[0], DIGITS_PER_IMAGE[1] + 1)):
        size = int(rng.integers(SCALES[0], SCALES[1] + 1))
        corner = place(rng, size, taken)
        if corner is None:
            continue
        pick = rng.integers(len(digits))
        glyph = np.asarray(
            Image.fromarray(digits[pick]).resize((size, size), Image.BILINEAR), dtype=np.float64
        )
        ys, xs = np.nonzero(glyph > 40)
        if len(xs) == 0:
            continue
        x, y = corner
        region = strokes[y : y + size, x : x + size]
        np.maximum(region, glyph, out=region)
        taken.append(np.array([x, y, x + size, y + size]))
        boxes.append(
            [float(x + xs.min()), float(y + ys.min()), float(x + xs.max() + 1), float(y + ys.max() + 1)]
        )
        names.append(int(labels[pick]))
    if domain == "plain":
        image = np.maximum(canvas, strokes[:, :, None])
    else:
        image = np.abs(canvas - strokes[:, :, None])  # MNIST-M: |photo - digit| per channel
    return np.clip(np.round(image), 0, 255).astype(np.uint8), boxes, names


def generate(
    root: Path,
    domain: str,
    split: str,
    count: int | None = None,
    seed: int | None = None,
    digits_root: Path | None = None,
) -> Path:
    """Write ``count`` canvases (default: the benchmark's) of ``domain``/``split`` and their COCO
    ``annotations.json`` under ``root``; MNIST is read from ``digits_root`` (default: ``root``). Returns
    the JSON's path."""
    from PIL import Image

    if (domain, split) not in COUNTS:
        raise ValueError(
            f"digit detection: unknown part {domain}_{split}; expected one of "
            f"{[f'{d}_{s}' for d, s in COUNTS]}"
        )
    count = COUNTS[domain, split] if count is None else count
    rng = np.random.default_rng(SEEDS[domain, split] if seed is None else seed)
    digits, labels = digit_pool(domain, split, root if digits_root is None else digits_root)
    photos = sklearn_photographs() if domain == "photo" else []
    folder = Path(root) / "digit_detection" / f"{domain}_{split}"
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for number in range(count):
        image, boxes, names = render(rng, domain, digits, labels, photos)
        file_name = f"{number:05d}.png"
        Image.fromarray(image).save(folder / file_name)
        images.append({"id": number, "file_name": file_name, "width": CANVAS, "height": CANVAS})
        for (x0, y0, x1, y1), name in zip(boxes, names, strict=True):
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": number,
                    "category_id": name,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    payload = {
        "info": {"description": f"SEMI-SYNTHETIC digit detection, {domain} domain, {split} split"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": d, "name": str(d)} for d in range(10)],
    }
    return write_json(folder / "annotations.json", payload)


register_generated("digit_detection", "demo://digit_detection/<plain_train|photo_train|photo_test>.json",
                   generate)
