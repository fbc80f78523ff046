"""Class-split protocols of universal domain adaptation: closed, partial, open-set, open-partial.

Class ids are those of the common label space (for digits: the digit). The source model's
outputs are the source classes ``sorted(shared + source_private)`` in that order; a target
sample of a shared class ``c`` gets the label ``source_classes.index(c)``; every target-private
sample, and every sample mixed in from another dataset, gets the label ``UNKNOWN`` = number of
source classes (one past the last known class).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SETTINGS = ("closed", "pda", "osda", "opda")


class ClassSplitError(ValueError):
    """A class split that cannot be used; the message names the recipe field."""


@dataclass
class ClassSplit:
    """Which classes the source and target share, and where unknown target samples come from.

    Args:
        shared: classes in both domains (at least one).
        source_private: classes only the source model knows (absent from the target).
        target_private: classes of the target dataset the source model never learnt (unknown).
        unknown_dataset: another dataset mixed into the target as unknown samples (e.g.
            ``fashion_mnist``), or None.
        unknown_ratio: how many ``unknown_dataset`` samples per known target sample, per split
            (a fixed seeded draw). 0.5 makes them one third of the target.
    """

    shared: list[int]
    source_private: list[int] = field(default_factory=list)
    target_private: list[int] = field(default_factory=list)
    unknown_dataset: str | None = None
    unknown_ratio: float = 0.5

    def __post_init__(self):
        self.shared, self.source_private, self.target_private = (
            [int(c) for c in self.shared], [int(c) for c in self.source_private],
            [int(c) for c in self.target_private])
        if not self.shared:
            raise ClassSplitError("data.split.shared: expected at least one class shared by source and "
                                  "target, got []")
        named = {"shared": self.shared, "source_private": self.source_private,
                 "target_private": self.target_private}
        for name, classes in named.items():
            if len(set(classes)) != len(classes):
                raise ClassSplitError(f"data.split.{name}: repeated class ids {classes}")
        for a, b in (("shared", "source_private"), ("shared", "target_private"),
                     ("source_private", "target_private")):
            overlap = sorted(set(named[a]) & set(named[b]))
            if overlap:
                raise ClassSplitError(f"data.split.{a} and data.split.{b} overlap in classes {overlap}; each "
                                      "class belongs to one list")
        if self.unknown_dataset is not None and not self.unknown_ratio > 0:
            raise ClassSplitError("data.split.unknown_ratio: expected > 0 with unknown_dataset set, got "
                                  f"{self.unknown_ratio}")

    @property
    def source_classes(self) -> list[int]:
        """Class ids in the source model's output order."""
        return sorted(self.shared + self.source_private)

    @property
    def unknown_label(self) -> int:
        return len(self.source_classes)

    @property
    def has_unknown(self) -> bool:
        return bool(self.target_private) or self.unknown_dataset is not None

    @property
    def setting(self) -> str:
        """'closed', 'pda' (source-private only), 'osda' (unknowns only) or 'opda' (both)."""
        return {(False, False): "closed", (True, False): "pda", (False, True): "osda", (True, True): "opda"}[
            (bool(self.source_private), self.has_unknown)]

    def relabel_target(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the target samples of shared and target-private classes; map labels to source
        indices, target-private to ``unknown_label``. ``(N, ...), (N,) -> (M, ...), (M,)``."""
        labels = np.asarray(labels)
        mapping = {c: i for i, c in enumerate(self.source_classes) if c in self.shared}
        mapping.update({c: self.unknown_label for c in self.target_private})
        keep = np.isin(labels, list(mapping))
        if not keep.any():
            raise ClassSplitError("data.split: no target sample belongs to the shared or target-private "
                                  f"classes {sorted(mapping)}; the target's labels are "
                                  f"{sorted(np.unique(labels).tolist())}")
        return images[keep], np.array([mapping[int(c)] for c in labels[keep]], dtype=np.int64)

    def mix_unknown(self, images: np.ndarray, labels: np.ndarray, other: np.ndarray,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Append ``unknown_ratio * len(images)`` samples drawn (seeded) from ``other`` as
        ``unknown_label``."""
        count = min(len(other), int(round(self.unknown_ratio * len(images))))
        pick = np.sort(np.random.default_rng(seed).permutation(len(other))[:count])
        if other.shape[1:] != images.shape[1:]:
            raise ClassSplitError(f"data.split.unknown_dataset: its images have shape {other.shape[1:]}, "
                                  f"expected {images.shape[1:]} like the target's")
        return (np.concatenate([images, other[pick]]),
                np.concatenate([labels, np.full(count, self.unknown_label, dtype=np.int64)]))

    def source_labels(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source training data: keep the source classes, labels mapped to output indices."""
        labels = np.asarray(labels)
        mapping = {c: i for i, c in enumerate(self.source_classes)}
        keep = np.isin(labels, list(mapping))
        if not keep.any():
            raise ClassSplitError("data.split: no source sample belongs to the source classes "
                                  f"{self.source_classes}")
        return images[keep], np.array([mapping[int(c)] for c in labels[keep]], dtype=np.int64)
