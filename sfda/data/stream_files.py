"""Readers of the published corruption benchmarks, as stream sources (``sfda.data.stream``): a user who has
the files runs the field's standard protocol from a recipe.

- ``CifarC``: CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019): ``<root>/<corruption>.npy``, an
  ``(5 N, 32, 32, 3) uint8`` array holding severities 1..5 one after the other (N = 10,000), and
  ``<root>/labels.npy`` ``(5 N,)``. Read memory-mapped: nothing is copied into memory.
- ``ImageNetC``: ``<root>/<corruption>/<severity>/<wnid>/<name>.JPEG``; classes are the 1,000 WordNet ids in
  sorted order (the torchvision / timm class index). ``subset: robustbench_5000`` keeps the 5,000 validation
  images the field's continual benchmarks use (RobustBench's ``imagenet_test_image_ids.txt``, fetched from the
  ``robustbench==1.1.1`` wheel, Apache-2.0), the same in every domain; ``all`` keeps every image found.

Arrays and lists only: ``np.load(..., allow_pickle=False)`` (a file is data, never code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from .corruptions import CORRUPTIONS, SEVERITIES, check_corruption
from .fetch import resolve
from .stream import Domain, StreamSource

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray "
    "road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar "
    "sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle "
    "wardrobe whale willow_tree wolf woman worm"
).split()
ROBUSTBENCH = "pypi://robustbench==1.1.1/robustbench/helper_files/"
ROBUSTBENCH_IDS = ROBUSTBENCH + "imagenet_test_image_ids.txt"
ROBUSTBENCH_CLASSES = ROBUSTBENCH + "imagenet_class_to_id_map.json"  # wnid -> class index, sorted wnids


def checked_corruptions(corruptions: list[str] | None) -> list[str]:
    names = list(CORRUPTIONS if corruptions is None else corruptions)
    if not names:
        raise ValueError("data.source.corruptions: expected at least one corruption, got an empty list")
    for name in names:
        check_corruption(name, 1, "data.source.corruptions")
    return names


class CifarC(StreamSource):
    """CIFAR-10-C or CIFAR-100-C from their published files (see the module docstring).

    Args:
        root: the folder holding ``<corruption>.npy`` and ``labels.npy``.
        classes: 'cifar10' or 'cifar100' (the class names, in label order).
        corruptions: the shifts in stream order (default the 15 in CoTTA's order).
    """

    def __init__(self, root: str, classes: Literal["cifar10", "cifar100"] = "cifar10",
                 corruptions: list[str] | None = None):
        if classes not in ("cifar10", "cifar100"):
            raise ValueError(f"data.source.classes: expected 'cifar10' or 'cifar100', got {classes!r}")
        self.root, self.corruptions = Path(root), checked_corruptions(corruptions)
        self.class_names = CIFAR10 if classes == "cifar10" else CIFAR100
        self._labels: np.ndarray | None = None

    @property
    def shifts(self) -> list[str]:
        return self.corruptions

    def _array(self, name: str) -> np.ndarray:
        path = self.root / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (data.source.root: expected CIFAR-C's "
                                    f"<corruption>.npy files and labels.npy in {self.root})")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: not a plain numpy array file ({err})") from None

    def labels(self) -> np.ndarray:
        """``labels.npy`` ``(5 N,)`` int64, checked."""
        if self._labels is None:
            labels = np.asarray(self._array("labels"))
            path = self.root / "labels.npy"
            integer = np.issubdtype(labels.dtype, np.integer)
            if labels.ndim != 1 or len(labels) % len(SEVERITIES) or not integer:
                raise ValueError(f"{path}: expected integer labels of shape (5 N,) (5 severities of N "
                                 f"images), got {labels.dtype} {labels.shape}")
            if labels.min() < 0 or labels.max() >= len(self.class_names):
                raise ValueError(f"{path}: expected labels in 0..{len(self.class_names) - 1} "
                                 f"(data.source.classes: {len(self.class_names)} classes), got "
                                 f"{labels.min()}..{labels.max()}")
            self._labels = labels.astype(np.int64)
        return self._labels

    def domain(self, corruption: str, severity: int) -> Domain:
        labels = self.labels()
        images = self._array(corruption)
        path = self.root / f"{corruption}.npy"
        if len(images) != len(labels):
            raise ValueError(f"{path}: {len(images)} images but {self.root / 'labels.npy'} has {len(labels)} "
                             "labels; expected one label per image")
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8 images of shape (5 N, H, W, 3), got {images.dtype} "
                             f"{images.shape}")
        n = len(labels) // len(SEVERITIES)
        rows = slice((severity - 1) * n, severity * n)
        return Domain(f"{corruption}-{severity}", images[rows], labels[rows])


class ImageNetC(StreamSource):
    """ImageNet-C from its published folders (see the module docstring).

    Args:
        root: the folder holding ``<corruption>/<severity>/<wnid>/*.JPEG``.
        subset: 'robustbench_5000' (the field's 5,000 images) or 'all'.
        corruptions: the shifts in stream order (default the 15 in CoTTA's order).
    """

    def __init__(self, root: str, subset: Literal["robustbench_5000", "all"] = "robustbench_5000",
                 corruptions: list[str] | None = None):
        if subset not in ("robustbench_5000", "all"):
            raise ValueError(f"data.source.subset: expected 'robustbench_5000' or 'all', got {subset!r}")
        self.root, self.subset, self.corruptions = Path(root), subset, checked_corruptions(corruptions)
        index = json.loads(Path(resolve(ROBUSTBENCH_CLASSES)).read_text())
        self.class_names = sorted(index, key=index.get)  # the 1,000 WordNet ids in class-index order
        self._ids: list[str] | None = None

    @property
    def shifts(self) -> list[str]:
        return self.corruptions

    def folder(self, corruption: str, severity: int) -> Path:
        path = self.root / corruption / str(severity)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder (data.source.root: expected ImageNet-C's "
                                    "<corruption>/<severity>/<wnid>/*.JPEG)")
        return path

    def ids(self) -> list[str]:
        """``<wnid>/<file>`` of the images every domain holds."""
        if self._ids is None:
            if self.subset == "robustbench_5000":
                text = Path(resolve(ROBUSTBENCH_IDS)).read_text()
                self._ids = [line.strip() for line in text.splitlines() if line.strip()]
            else:
                top = self.folder(self.corruptions[0], 1)
                self._ids = sorted(f"{p.parent.name}/{p.name}" for p in top.glob("*/*") if p.is_file())
        return self._ids

    def domain(self, corruption: str, severity: int) -> Domain:
        folder = self.folder(corruption, severity)
        index = {wnid: k for k, wnid in enumerate(self.class_names)}
        ids = self.ids()
        missing = [i for i in ids[:50] if not (folder / i).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder / missing[0]}: no such image ({len(missing)} of the first 50 "
                                    f"{self.subset} images missing from {folder}; data.source.subset: 'all' "
                                    "uses the images present)")
        unknown = sorted({i.split("/")[0] for i in ids} - set(index))
        if unknown:
            raise ValueError(f"{folder}: folders {unknown[:3]} are not ImageNet WordNet ids (expected "
                             "<corruption>/<severity>/<wnid>/*.JPEG)")
        images = np.array([str(folder / i) for i in ids], dtype=object)
        labels = np.array([index[i.split("/")[0]] for i in ids], dtype=np.int64)
        return Domain(f"{corruption}-{severity}", images, labels)
