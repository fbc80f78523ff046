"""Data pieces of active adaptation: labelled subsets, an endless labelled batch stream, and
the training epoch of a round (adaptation steps, then mixup steps over the labelled set)."""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader, Dataset

from .samplers import GlobalBatchSampler


class SealedLabels:
    """Target training labels locked away: ``reveal(indices)`` is the only way to read them and
    it records every index it revealed (``revealed``). Anything else (indexing, iteration,
    ``np.asarray``) raises, so no code path can read target labels by accident."""

    def __init__(self, labels):
        self._labels = np.asarray(labels, dtype=np.int64)
        self.revealed: list[int] = []

    def __len__(self) -> int:
        return len(self._labels)

    def reveal(self, indices) -> np.ndarray:
        """Labels ``(n,)`` of the samples at ``indices`` (global indices of the target training split)."""
        indices = np.asarray(indices, dtype=np.int64)
        self.revealed += indices.tolist()
        return self._labels[indices].copy()

    def subset(self, keep: np.ndarray) -> SealedLabels:
        return SealedLabels(self._labels[keep])

    def _refuse(self, *args, **kwargs):
        raise PermissionError("target training labels are sealed: only an annotator may reveal them, for "
                              "queried samples")

    __getitem__ = __iter__ = __array__ = _refuse


class IndexedSubset(Dataset):
    """The samples of ``dataset`` at global ``indices``, optionally with the labels a person or
    benchmark annotator gave them. Items keep their GLOBAL ``index``; a sampler's
    ``(position, seed)`` key seeds augmentation as for the whole dataset."""

    def __init__(self, dataset, indices, labels=None):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.indices):
            raise ValueError(f"IndexedSubset: {len(self.indices)} indices but {len(self.labels)} labels")

    @property
    def view(self):
        return self.dataset.view

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        position, seed = key if isinstance(key, tuple) else (key, None)
        item = self.dataset[(int(self.indices[position]), seed) if seed is not None
                            else int(self.indices[position])]
        if self.labels is not None:
            item["label"] = int(self.labels[position])
        return item


class CyclingBatchSampler(GlobalBatchSampler):
    """A ``GlobalBatchSampler`` that never ends: a new seeded permutation (epoch + 1) when one is used up.
    Pairs every adaptation step with a labelled batch however small the labelled set is."""

    def __iter__(self):
        while True:
            yield from super().__iter__()
            self.epoch += 1

    def __len__(self) -> int:
        raise TypeError("CyclingBatchSampler is endless")


class ActiveEpoch:
    """One training epoch of a round: ``{"unlabelled": batch, "labelled": batch}`` for every
    unlabelled batch, then ``{"mixup": batch}`` for every batch of ``mixup`` (None: no mixup steps).

    Args:
        unlabelled: loader over the still-unlabelled pool.
        labelled: endless loader over the labelled samples (``CyclingBatchSampler``).
        mixup: loader over the labelled samples for the end-of-epoch mixup pass, or None.
    """

    def __init__(self, unlabelled: DataLoader, labelled: DataLoader, mixup: DataLoader | None):
        self.unlabelled, self.labelled, self.mixup = unlabelled, labelled, mixup

    def __len__(self) -> int:
        return len(self.unlabelled) + (len(self.mixup) if self.mixup is not None else 0)

    def __iter__(self):
        stream = iter(self.labelled)
        for batch in self.unlabelled:
            yield {"unlabelled": batch, "labelled": next(stream)}
        if self.mixup is not None:
            for batch in self.mixup:
                yield {"mixup": batch}
