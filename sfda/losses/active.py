"""Losses of active adaptation (LFTL): anchor entropy (visual persistence) and mixup targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..pseudo_labels import entropy


def anchor_entropy(features: torch.Tensor, anchors: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """LFTL's visual-persistence term: ``mean_i H(softmax_j(cos(f_i, M_j) / T))``.

    Minimising it pulls each unlabelled feature towards its nearest labelled anchors.

    Args:
        features: ``(B, D)`` features of unlabelled samples (gradient flows).
        anchors: ``(L, D)`` anchor memory of the labelled samples (no gradient).
        temperature: cosine-softmax temperature (the official code has none: 1.0).
    """
    similarity = F.normalize(features.float(), dim=1) @ F.normalize(anchors.float(), dim=1).T
    return entropy((similarity / temperature).softmax(dim=1)).mean()


def mixup_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, lam: float,
                permutation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of a labelled batch: ``x = lam x + (1 - lam) x[perm]`` and soft targets alike.

    Args:
        images: ``(B, ...)``; labels: ``(B,)`` class ids; lam: mixing weight; permutation: ``(B,)``.
    Returns:
        mixed images ``(B, ...)`` and soft targets ``(B, C)``.
    """
    onehot = F.one_hot(labels, num_classes).float()
    return (lam * images + (1 - lam) * images[permutation],
            lam * onehot + (1 - lam) * onehot[permutation])
