"""Clustering pieces: SHOT's centroid labelling and seeded k-means (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_and_normalise(features: torch.Tensor) -> torch.Tensor:
    """SHOT's feature map for cosine clustering: append a constant 1, then L2-normalise rows.
    ``(N, D) -> (N, D+1)``."""
    ones = features.new_ones(features.shape[0], 1, dtype=torch.float32)
    return normalise_rows_(torch.cat([features.float(), ones], dim=1))


def normalise_rows_(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=1)`` written into ``x`` itself (the same values: each row divided by its norm,
    at least ``eps``), without a second ``(N, D)`` tensor. Returns ``x``."""
    return x.div_(x.norm(dim=1, keepdim=True).clamp_min_(eps))


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


KMEANS_BLOCK_ROWS = 65_536
"""Points k-means normalises and measures at a time (cosine: no normalised copy of all N rows; 64 MiB of
256-d float32 per block)."""


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
    x = x.float()
    gen = torch.Generator().manual_seed(seed)

    def chunks():  # (start, rows): the points in blocks, normalised block by block when cosine
        for start in range(0, n, KMEANS_BLOCK_ROWS):
            rows = x[start : start + KMEANS_BLOCK_ROWS]
            yield start, F.normalize(rows, dim=1) if cosine else rows

    def point(i: int) -> torch.Tensor:
        return F.normalize(x[i : i + 1], dim=1) if cosine else x[i : i + 1]

    def nearest(centroids: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.cdist(rows, centroids).argmin(1) for _, rows in chunks()])

    first = int(torch.randint(n, (1,), generator=gen))
    centroids = point(first)
    closest = torch.cat([torch.cdist(rows, centroids).squeeze(1) ** 2 for _, rows in chunks()])
    for _ in range(1, k):
        pick = int(torch.multinomial((closest + 1e-12).cpu(), 1, generator=gen))
        centroids = torch.cat([centroids, point(pick)])
        for start, rows in chunks():
            part = closest[start : start + len(rows)]
            torch.minimum(part, torch.cdist(rows, centroids[-1:]).squeeze(1) ** 2, out=part)
    labels = nearest(centroids)
    for _ in range(iters):
        sums = torch.zeros_like(centroids)
        for start, rows in chunks():
            sums.index_add_(0, labels[start : start + len(rows)], rows)
        sizes = torch.bincount(labels, minlength=k).clamp(min=1).to(x.dtype)[:, None]
        updated = torch.where(sizes > 0, sums / sizes, centroids)
        empty = torch.bincount(labels, minlength=k) == 0
        updated[empty] = centroids[empty]
        if cosine:
            updated = F.normalize(updated, dim=1)
        shift = (updated - centroids).norm(dim=1).max()
        centroids = updated
        labels = nearest(centroids)
        if shift < tol:
            break
    return centroids, labels
