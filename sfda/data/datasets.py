"""Map-style datasets returning ``{"image", "label", "index"}`` with the GLOBAL sample index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .fetch import resolve
from .image_files import DEFAULT_LIMIT, PixelLimit, read_image
from .transforms import InputSpec, View, build_view, model_input, prepared_input, to_tensor

UNLABELLED = -1


STRONG_VIEW_SEED = 7_000_000  # evaluation strong views: seed = this + sample index


class MemoryBudget:
    """Bytes that the ``PreparedInputs`` sharing it may keep, together."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.used_bytes = 0


class PreparedInputs:
    """Model inputs of one split's deterministic ``test`` view, kept by sample index after their first
    use within a ``MemoryBudget`` (a datamodule's splits share one): an epoch that passes over the same
    images again (the engine's pass at every epoch start, training with ``train_view: test``, evaluation
    every epoch) takes them from memory instead of decoding and resizing each image again. An input is
    kept as the resized uint8 image where the view allows (``transforms.prepared_input``: a quarter of
    the float input's bytes) and normalised on use to the same values.

    The inputs live in ONE preallocated slab ``(capacity, *input shape)``, reserved at the first ``put``
    for the split's first ``capacity`` samples (all of them when the budget allows). Tens of thousands of
    small tensors, each allocated between a batch's large activations, kept the C heap from returning
    freed memory: the process grew by gigabytes more than the inputs themselves (4.1 GiB against 1.1 GiB
    without keeping, measured on 60k MNIST; ``benchmarks/memory_profile.py``). Only the main process
    keeps inputs: loader worker processes read what it kept before they started, and keep nothing (each
    would hold a copy of its own)."""

    def __init__(self, budget: MemoryBudget):
        self.budget = budget
        self.slab: torch.Tensor | None = None  # (capacity, *input shape), reserved at the first put
        self.kept: torch.Tensor | None = None  # (capacity,) bool: which slots hold an input

    def get(self, index: int) -> torch.Tensor | None:
        if self.kept is None or index >= len(self.kept) or not self.kept[index]:
            return None
        return self.slab[index]

    def put(self, index: int, image: torch.Tensor, total: int) -> None:
        """Keep ``image`` as the input of sample ``index`` of a split of ``total`` samples."""
        if get_worker_info() is not None:
            return
        if self.slab is None:
            size = image.numel() * image.element_size()
            capacity = min(total, max(self.budget.limit_bytes - self.budget.used_bytes, 0) // max(size, 1))
            self.slab = torch.empty((capacity, *image.shape), dtype=image.dtype)  # pages touched as filled
            self.kept = torch.zeros(capacity, dtype=torch.bool)
            self.budget.used_bytes += capacity * size
        if index < len(self.kept) and image.shape == self.slab.shape[1:] and image.dtype == self.slab.dtype:
            self.slab[index] = image
            self.kept[index] = True

    @property
    def count(self) -> int:
        """How many inputs are kept."""
        return 0 if self.kept is None else int(self.kept.sum())


class ImageDataset(Dataset):
    """Images from an array ``(N, H, W[, C]) uint8`` or a list of file paths.

    Args:
        images: the array, or a sequence of image paths (read with PIL on access).
        labels: ``(N,)`` int labels; ``None`` or ``hide_labels`` gives -1 for every sample, so
            an adaptation stage provably never sees target labels.
        spec: the model's input spec.
        view: which augmentation view to apply.
        hide_labels: return -1 instead of the label.
        strong_view: items also carry ``"strong"``: the strong view, seeded by the sample index
            (the same on any number of processes).
        prepared: a store of this split's test-view inputs (see ``PreparedInputs``); used only when
            ``view`` is 'test'.
    """

    def __init__(self, images, labels, spec: InputSpec, view: View = "test", hide_labels: bool = False,
                 strong_view: bool = False, prepared: PreparedInputs | None = None):
        self.images = images
        self.prepared = prepared if view == "test" else None
        self.labels = None if labels is None or hide_labels else np.asarray(labels, dtype=np.int64)
        self.spec = spec
        self.view = view
        self.pipeline = build_view(spec, view)
        self.strong_pipeline = build_view(spec, "strong") if strong_view else None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        """The raw uint8 image ``index``; a path that cannot be read raises naming the file."""
        item = self.images[index]
        return read_image(item, index) if isinstance(item, (str, Path)) else item

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key`` is a sample index, or ``(index, seed)`` to draw this sample's augmentation from
        ``seed``."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None and self.view != "test":
            self.pipeline.set_random_seed(seed)
        label = UNLABELLED if self.labels is None else int(self.labels[index])
        kept = None if self.prepared is None else self.prepared.get(index)
        raw = self.load(index) if kept is None or self.strong_pipeline is not None else None
        if kept is None:
            kept = prepared_input(raw, self.spec, self.pipeline)
            if self.prepared is not None:
                self.prepared.put(index, kept, len(self))
        item = {"image": model_input(kept, self.pipeline), "label": label, "index": index}
        if self.strong_pipeline is not None:
            self.strong_pipeline.set_random_seed(STRONG_VIEW_SEED + index)
            item["strong"] = to_tensor(raw, self.spec, self.strong_pipeline)
        return item


class RGBImageCache:
    """Decoded images as ``H x W x 3 uint8`` (grey repeated over 3 channels), the most recent kept within
    ``limit_bytes`` (at least one): detection and pose read each image's crops or tiles from one decode.
    An image of more than ``pixels`` pixels is refused (see ``image_files.PixelLimit``)."""

    def __init__(self, limit_bytes: int, pixels: PixelLimit = DEFAULT_LIMIT):
        from collections import OrderedDict

        self.limit_bytes, self.images = limit_bytes, OrderedDict()
        self.pixels = pixels

    def get(self, location: str, index: int) -> np.ndarray:
        """The image at ``location`` (a path or URI) of sample ``index`` (for messages)."""
        if location not in self.images:
            image = read_image(resolve(location), index, self.pixels)
            rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
            self.images[location] = rgb
            while len(self.images) > 1 and sum(a.nbytes for a in self.images.values()) > self.limit_bytes:
                self.images.popitem(last=False)
        return self.images[location]
