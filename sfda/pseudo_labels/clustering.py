"""Clustering pieces: SHOT's centroid labelling and seeded k-means (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_and_normalise(features: torch.Tensor) -> torch.Tensor:
    """SHOT's feature map for cosine clustering: append a constant 1, then L2-normalise rows.
    ``(N, D) -> (N, D+1)``."""
    ones = features.new_ones(features.shape[0], 1)
    return F.normalize(torch.cat([features.float(), ones], dim=1), dim=1)


def centroid_labels(
    features: torch.Tensor, probs: torch.Tensor, rounds: int = 2, min_count: int = 0
) -> torch.Tensor:
    """SHOT self-supervised pseudo-labels by weighted k-means on the source hypothesis.

    Round 1 weights every sample by its softmax ``probs`` to form one centroid per class
    (``c_k = sum_i P_ik F_i / sum_i P_ik``); each later round uses one-hot weights of the
    previous assignment. Only classes whose source-argmax count exceeds ``min_count``
    may receive samples (fixed once, as in the official code). Distances are cosine on the augmented,
    normalised features.

    Args:
        features: ``(N, D)`` raw features.
        probs: ``(N, C)`` softmax outputs.
        rounds: number of assignments (SHOT: 2).
        min_count: class-size threshold (SHOT: 0).

    Returns:
        ``(N,)`` int64 labels in ``[0, C)``.
    """
    feats = augment_and_normalise(features)
    probs = probs.float()
    num_classes = probs.shape[1]
    weights = probs
    valid = F.one_hot(probs.argmax(1), num_classes).sum(0) > min_count
    labels = probs.argmax(1)
    for _ in range(rounds):
        centroids = weights.T @ feats / (weights.sum(0)[:, None] + 1e-8)
        sims = feats @ F.normalize(centroids, dim=1).T
        sims[:, ~valid] = -float("inf")
        labels = sims.argmax(1)
        weights = F.one_hot(labels, num_classes).float()
    return labels


def kmeans(
    x: torch.Tensor, k: int, iters: int = 50, seed: int = 0, cosine: bool = False, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding from a private generator (deterministic given ``seed``).

    Args:
        x: ``(N, D)`` points (L2-normalised first when ``cosine``).
        k: clusters, ``1 <= k <= N``.

    Returns:
        centroids ``(k, D)`` and labels ``(N,)``.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: need 1 <= k <= number of samples ({n}), got k={k}")
    x = F.normalize(x.float(), dim=1) if cosine else x.float()
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids = x[first : first + 1]
    closest = torch.cdist(x, centroids).squeeze(1) ** 2
    for _ in range(1, k):
        pick = int(torch.multinomial((closest + 1e-12).cpu(), 1, generator=gen))
        centroids = torch.cat([centroids, x[pick : pick + 1]])
        closest = torch.minimum(closest, torch.cdist(x, x[pick : pick + 1]).squeeze(1) ** 2)
    labels = torch.cdist(x, centroids).argmin(1)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        sizes = torch.bincount(labels, minlength=k).clamp(min=1).to(x.dtype)[:, None]
        updated = torch.where(sizes > 0, sums / sizes, centroids)
        empty = torch.bincount(labels, minlength=k) == 0
        updated[empty] = centroids[empty]
        if cosine:
            updated = F.normalize(updated, dim=1)
        shift = (updated - centroids).norm(dim=1).max()
        centroids = updated
        labels = torch.cdist(x, centroids).argmin(1)
        if shift < tol:
            break
    return centroids, labels
