"""Selecting which pseudo-labels to trust: confidence, normalised entropy, 2-means on entropy."""

from __future__ import annotations

import math

import torch


def entropy(probs: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Shannon entropy of each row of ``probs`` ``(N, C) -> (N,)`` (nats)."""
    return -(probs * torch.log(probs + eps)).sum(dim=1)


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy divided by ``log C``, in [0, 1]. ``(N, C) -> (N,)``."""
    return entropy(probs) / math.log(probs.shape[1])


def confidence_mask(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(N,)`` bool: max probability >= ``threshold``."""
    return probs.max(dim=1).values >= threshold


def class_balanced_mask(probs: torch.Tensor, fraction: float) -> torch.Tensor:
    """``(N,)`` bool: within each predicted class keep the ``fraction`` most confident samples."""
    conf, pred = probs.max(dim=1)
    keep = torch.zeros_like(pred, dtype=torch.bool)
    for c in pred.unique():
        members = (pred == c).nonzero().squeeze(1)
        n_keep = max(1, int(math.ceil(fraction * members.numel())))
        keep[members[conf[members].topk(n_keep).indices]] = True
    return keep


def unknown_by_entropy(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Open-set rejection: ``(N,)`` bool, normalised entropy > ``threshold`` (GLC: w0 = 0.55)."""
    return normalised_entropy(probs) > threshold


def entropy_2means_threshold(probs: torch.Tensor, iters: int = 100) -> float:
    """SHOT-O: 2-means on normalised entropy (centres start at 0 and 1, as the official
    ``KMeans(init=[[0], [1]])``); returns the midpoint of the two centres."""
    h = normalised_entropy(probs.float())
    centres = h.new_tensor([0.0, 1.0])
    for _ in range(iters):
        labels = (h[:, None] - centres[None]).abs().argmin(1)
        updated = torch.stack([h[labels == j].mean() if (labels == j).any() else centres[j]
                               for j in range(2)])
        if torch.allclose(updated, centres):
            break
        centres = updated
    return float(centres.mean())


def unknown_by_entropy_2means(probs: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """SHOT-O rejection: ``(N,)`` bool, normalised entropy above ``entropy_2means_threshold``."""
    return normalised_entropy(probs) > entropy_2means_threshold(probs, iters)
