"""Class-marginal priors: the target distribution a method pulls predictions' marginal towards."""

from __future__ import annotations

import torch


def uniform_prior(num_classes: int) -> torch.Tensor:
    """``(C,)`` uniform distribution, the implicit target of information maximisation."""
    return torch.full((num_classes,), 1.0 / num_classes)


def class_marginal(probs: torch.Tensor) -> torch.Tensor:
    """Mean prediction ``(N, C) -> (C,)``: the model's estimate of the class marginal."""
    return probs.float().mean(dim=0)


def estimated_prior(probs: torch.Tensor, smoothing: float = 1e-3) -> torch.Tensor:
    """Label-free prior estimated from (source-model) predictions on target: argmax frequencies, smoothed.
    ``(N, C) -> (C,)``."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float() + smoothing
    return counts / counts.sum()


# class-ratio priors per image (segmentation) -------------------------------------------------
# A provider turns the training samples' ids (and, for two of them, per-sample class fractions
# measured by a pass over the target) into a table ``(N, C)`` of expected class fractions
# tau_e, row i for global sample index i. Background (class 0) is the remainder.

def prior_from_sizes(sizes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``sizes (C-1,)`` foreground fractions, ``present (N, C-1)`` bool tags -> ``(N, C)`` tau_e:
    size where the class is tagged present, 0 where absent, background the remainder."""
    foreground = sizes.float()[None, :] * present.float()
    return torch.cat([(1 - foreground.sum(dim=1, keepdim=True)).clamp_min(0), foreground], dim=1)


def class_fractions(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``labels (B, *spatial)`` int -> ``(B, C)`` fraction of voxels of each class (predicted or true
    masks)."""
    flat = labels.flatten(1).long()
    counts = torch.zeros(flat.shape[0], num_classes, device=flat.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float))
    return counts / flat.shape[1]


def _read_table(path: str, ids: list[str], columns: list[str], what: str) -> torch.Tensor:
    """Rows of CSV ``path`` (header ``id,<columns...>``) in the order of ``ids``; errors name the file and the
    missing id."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            absent = [c for c in ["id", *columns] if c not in fields]
            if absent:
                raise ValueError(f"{path}: {what} CSV lacks columns {absent} (expected header "
                                 f"'id,{','.join(columns)}', got {fields})")
            rows = {row["id"]: row for row in reader}
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: {what} CSV not found") from err
    missing = [i for i in ids if i not in rows]
    if missing:
        raise KeyError(f"{path}: no row for {len(missing)} sample ids, e.g. {missing[:3]} (ids are "
                       "'<volume>:<axis>:<slice>')")
    try:
        return torch.tensor([[float(rows[i][c]) for c in columns] for i in ids])
    except ValueError as err:
        raise ValueError(f"{path}: non-numeric {what} value ({err})") from err


class PriorProvider:
    """Base of the class-ratio prior providers. ``needs`` says what pass over the target the
    method must make first: 'nothing', 'source_predictions' (label-free) or 'true_labels'
    (upper-bound experiments only)."""

    needs = "nothing"
    name = "prior"

    def table(self, ids: list[str], class_names: list[str],
              fractions: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C)`` tau_e for samples ``ids``; ``fractions (N, C)`` as ``needs`` says."""
        raise NotImplementedError


PREDICTED_TAGS = "source_predictions"


def class_presence(fractions: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """Image-level tags from masks: ``fractions (N, C)`` (true masks, or the source model's predictions:
    label-free) -> ``(N, C-1)`` bool, a foreground class present where it covers more than
    ``min_fraction``."""
    return fractions[:, 1:].float() > min_fraction


def mean_size_where_present(fractions: torch.Tensor, min_fraction: float = 0.0) -> torch.Tensor:
    """Anatomical size per foreground class: ``fractions (N, C)`` (true or predicted masks) ->
    ``(C-1,)`` mean fraction over the samples where the class covers more than ``min_fraction``
    (0 for a class present nowhere). From source labels it is the ``sizes`` of ``ConstantSizes``."""
    foreground = fractions[:, 1:].float()
    present = class_presence(fractions, min_fraction)
    return (foreground * present).sum(0) / present.sum(0).clamp_min(1)


def check_min_fraction(min_fraction: float) -> float:
    if not 0 <= min_fraction < 1:
        raise ValueError("model.prior.min_fraction: expected a predicted fraction in [0, 1), got "
                         f"{min_fraction}")
    return float(min_fraction)


class ConstantSizes(PriorProvider):
    """Constant anatomical size per foreground class, applied where an image-level tag says the
    class is present (0 where absent; background the remainder).

    Args:
        sizes: expected fraction of the image per foreground class (C-1 values, class order),
            e.g. the mean over the source site's labelled slices that contain the class.
        tags: CSV (header ``id,<foreground class names>``, values 0/1), ``"module:function"``
            mapping a sample id to the names of the classes present, ``"source_predictions"``
            (label-free: present where the source model predicts more than ``min_fraction`` of
            the class), or None: every class present.
        min_fraction: predicted fraction above which a class counts as present
            (``tags: source_predictions`` only).
    """

    name = "constant"

    def __init__(self, sizes: list[float], tags: str | None = None, min_fraction: float = 0.01):
        self.sizes, self.tags = [float(s) for s in sizes], tags
        self.min_fraction = check_min_fraction(min_fraction)

    @property
    def needs(self) -> str:
        return "source_predictions" if self.tags == PREDICTED_TAGS else "nothing"

    def _present(self, ids: list[str], foreground: list[str], fractions: torch.Tensor | None) -> torch.Tensor:
        if self.tags is None:
            return torch.ones(len(ids), len(foreground), dtype=torch.bool)
        if self.tags == PREDICTED_TAGS:
            return class_presence(fractions, self.min_fraction)
        if self.tags.endswith(".csv"):
            return _read_table(self.tags, ids, foreground, "tags") > 0.5
        import importlib

        module, _, attr = self.tags.rpartition(":")
        try:
            tag = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"model.prior.tags: '{self.tags}' is neither a .csv file, '{PREDICTED_TAGS}' "
                             f"nor an importable 'module:function' ({err})") from err
        return torch.tensor([[name in set(tag(i)) for name in foreground] for i in ids], dtype=torch.bool)

    def table(self, ids, class_names, fractions=None):
        if len(self.sizes) != len(class_names) - 1:
            raise ValueError(f"model.prior.sizes: expected {len(class_names) - 1} foreground sizes "
                             f"(classes {class_names[1:]}), got {self.sizes}")
        return prior_from_sizes(torch.tensor(self.sizes), self._present(ids, class_names[1:], fractions))


class ImageSizes(PriorProvider):
    """Per-image class sizes from a CSV (header ``id,<foreground class names>``, fractions)."""

    name = "csv"

    def __init__(self, csv: str):
        self.csv = csv

    def table(self, ids, class_names, fractions=None):
        foreground = _read_table(self.csv, ids, class_names[1:], "sizes")
        return torch.cat([(1 - foreground.sum(1, keepdim=True)).clamp_min(0), foreground], dim=1)


class SourceEstimate(PriorProvider):
    """Label-free: the source model's own predictions on target. A class is tagged present in a
    sample where the source predicts more than ``min_fraction`` of it; its constant size is the
    mean predicted fraction over those samples (``ConstantSizes`` with estimated sizes and tags).

    Args:
        min_fraction: predicted fraction above which a class counts as present.
    """

    needs = "source_predictions"
    name = "estimated"

    def __init__(self, min_fraction: float = 0.01):
        self.min_fraction = check_min_fraction(min_fraction)

    def table(self, ids, class_names, fractions=None):
        return prior_from_sizes(mean_size_where_present(fractions, self.min_fraction),
                                class_presence(fractions, self.min_fraction))


class TrueSizes(PriorProvider):
    """UPPER BOUND ONLY: the true class fractions of every target sample, read from target
    labels. Not source-free-realistic; reported as ``entropy+prior(true)``."""

    needs = "true_labels"
    name = "true"

    def table(self, ids, class_names, fractions=None):
        return fractions.float()
