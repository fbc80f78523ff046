"""Closed-set and universal-DA accuracy from one confusion matrix: acc, per-class accuracy, H-score.

Labels: ``0..C-1`` known (source) classes, ``C`` = unknown (target-private), ``-1`` = no label.
Predictions: ``0..C-1``, or ``C`` when the method rejects the sample as unknown.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def confusion(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C+1, C+1)`` counts, rows = true label, columns = prediction; unlabelled rows (-1) skipped."""
    keep = labels >= 0
    size = num_classes + 1
    flat = labels[keep].long() * size + predictions[keep].long().clamp(0, num_classes)
    return torch.bincount(flat, minlength=size * size).reshape(size, size)


def scores_from_confusion(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Accuracy family from a ``(C+1, C+1)`` confusion matrix.

    Returns (only what the labels support):
        acc: all labelled samples, unknown ones right when predicted unknown (PDA, closed: the
            reported accuracy).
        acc_per_class: mean per-class accuracy over the known classes present in the labels.
        and where unknown samples exist: known_acc (= acc_per_class, the H-score's a_k),
        unknown_acc (all unknown samples pooled, a_u), h_score = 2 a_k a_u / (a_k + a_u).
    """
    matrix = matrix.double()
    total = matrix.sum()
    if total == 0:
        return {}
    unknown = matrix.shape[0] - 1
    support = matrix.sum(1)
    known = support[:unknown] > 0
    per_class = matrix.diagonal()[:unknown][known] / support[:unknown][known]
    out = {"acc": matrix.diagonal().sum() / total}
    if known.any():
        out["acc_per_class"] = per_class.mean()
    if support[unknown] > 0:
        a_u = matrix[unknown, unknown] / support[unknown]
        out["unknown_acc"] = a_u
        if known.any():
            a_k = per_class.mean()
            out["known_acc"] = a_k
            out["h_score"] = 2 * a_k * a_u / (a_k + a_u) if (a_k + a_u) > 0 else a_k * 0
    return {k: v.float() for k, v in out.items()}


class ClassificationScores(Metric):
    """Accumulates the confusion matrix (summed over processes) and computes ``scores_from_confusion``."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("matrix", torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        self.matrix += confusion(predictions, labels, self.num_classes).to(self.matrix.device)

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.matrix)
