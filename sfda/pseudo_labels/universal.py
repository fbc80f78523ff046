"""Universal-DA pieces of the engine (GLC): cluster-count selection by silhouette and
one-vs-all global clustering with positive / k-means negative prototypes.

Everything runs in torch on L2-normalised features. The official GLC code projects the
features to 2-D with t-SNE before choosing the cluster count; that projection is optional
here (``benchmarks/glc_global_step.py`` measures both and their agreement).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clustering import kmeans
from .knn import block_rows

GLC_COEFFICIENTS = (0.25, 0.5, 1.0, 2.0, 3.0)


def silhouette_score(x: torch.Tensor, labels: torch.Tensor, chunk_size: int = 2048) -> float:
    """Mean silhouette (Euclidean) of points ``x (N, D)`` with cluster ``labels (N,)``; exact, O(N^2 D) in
    chunks.

    s_i = (b_i - a_i) / max(a_i, b_i), a_i = mean distance to the other members of i's cluster,
    b_i = smallest mean distance to another cluster; s_i = 0 for singleton clusters (sklearn's convention).
    Each block holds at most ``chunk_size`` rows and 2^28 distances (``knn.BLOCK_ELEMENTS``), so memory is
    bounded whatever N.
    """
    labels = torch.unique(labels, return_inverse=True)[1]
    k = int(labels.max()) + 1
    if k < 2:
        raise ValueError(f"silhouette_score: needs at least 2 clusters, got {k}")
    one_hot = F.one_hot(labels, k).to(x.dtype)
    sizes = one_hot.sum(0)
    scores = []
    rows = block_rows(x.shape[0], chunk_size)
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows]
        sums = torch.cdist(block, x) @ one_hot  # (b, k) summed distance to each cluster
        own = labels[start : start + rows]
        own_size = sizes[own]
        a = sums.gather(1, own[:, None]).squeeze(1) / (own_size - 1).clamp(min=1)
        means = sums / sizes
        means.scatter_(1, own[:, None], float("inf"))
        b = means.min(1).values
        s = (b - a) / torch.maximum(a, b).clamp(min=1e-12)
        scores.append(torch.where(own_size > 1, s, torch.zeros_like(s)))
    return float(torch.cat(scores).mean())


def candidate_cluster_counts(num_source_classes: int, coefficients=GLC_COEFFICIENTS) -> list[int]:
    """GLC's candidates ``max(int(C_s * coef), 2)`` for each coefficient (duplicates kept, in order)."""
    return [max(int(num_source_classes * c), 2) for c in coefficients]


def select_num_clusters(features: torch.Tensor, num_source_classes: int, coefficients=GLC_COEFFICIENTS,
                        max_samples: int = 10000, seed: int = 0, projection: torch.Tensor | None = None
                        ) -> tuple[float, dict[float, float]]:
    """GLC step 1: the coefficient ``coef`` (target cluster count ``K_hat = int(C_s * coef)``)
    whose k-means clustering has the best silhouette.

    Args:
        features: ``(N, D)`` target features (L2-normalised here).
        num_source_classes: C_s.
        coefficients: GLC's list.
        max_samples: cluster and score a seeded subsample of at most this many points (the
            official code subsamples a third of large sets).
        projection: optional ``(N, d)`` embedding to cluster instead (the official t-SNE).

    Returns:
        the chosen coefficient and ``{coef: silhouette}``. (The official code keeps the best
        score in a global initialised to 0, so with all silhouettes negative it silently keeps
        coef 1; here the best coefficient is always the argmax.)
    """
    points = projection.float() if projection is not None else F.normalize(features.float(), dim=1)
    n = points.shape[0]
    if n < max(candidate_cluster_counts(num_source_classes, coefficients)):
        raise ValueError(f"GLC: the target has {n} samples, fewer than the largest candidate cluster count "
                         f"{max(candidate_cluster_counts(num_source_classes, coefficients))}; use more "
                         "target data or smaller model.init_args.coefficients")
    if n > max_samples:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        points = points[order[:max_samples].sort().values]
    scores = {}
    for coef, k in zip(coefficients, candidate_cluster_counts(num_source_classes, coefficients), strict=True):
        _, labels = kmeans(points, k, seed=seed)
        scores[coef] = silhouette_score(points, labels) if labels.unique().numel() > 1 else -1.0
    return max(scores, key=lambda c: scores[c]), scores


def one_vs_all_pseudo_labels(features: torch.Tensor, probs: torch.Tensor, coefficient: float,
                             rho: float = 0.75, seed: int = 0, kmeans_iters: int = 100,
                             max_points_per_centroid: int | None = 256) -> dict[str, torch.Tensor]:
    """GLC steps 2-3: global one-vs-all clustering.

    With ``K_hat = int(C * coefficient)`` clusters and ``n_pos = int(N / (C * coefficient))``: for
    each source class c the ``n_pos`` samples with the largest ``probs[:, c]`` are its positives
    (prototype = normalised mean feature); the rest are clustered into ``K_hat`` negative
    prototypes (Lloyd k-means on the L2-normalised features, centroids normalised after, as
    the official faiss call; like faiss, k-means is fitted on a seeded sample of at most
    ``max_points_per_centroid * K_hat`` negatives, then every sample is scored against it). Prior
    ``pi_c = rho + (1 - rho) * mean(top-n_pos probs[:, c])``.
    Sample n takes ``c_n = argmax_c cos(F_n, mu+_c)`` and is known iff
    ``pi_{c_n} cos(F_n, mu+_{c_n}) > max_k cos(F_n, mu-_{c_n,k})``.

    Args:
        features: ``(N, D)``; probs: ``(N, C)`` softmax of the current model.
        coefficient: from ``select_num_clusters``.
        rho: source-private prior floor (0.75).
        max_points_per_centroid: faiss's default (256) that the official code runs with; None fits
            k-means on every negative (about 10x slower at N = 60,000).

    Returns:
        ``targets (N, C)``: one-hot(c_n) for known samples, uniform 1/C for the others;
        ``labels (N,)`` c_n; ``known (N,)`` bool; ``prior (C,)``.
    """
    n, c = probs.shape
    num_clusters = max(1, int(c * coefficient))
    n_pos = max(1, int(n / (c * coefficient)))
    if num_clusters > n - n_pos:
        raise ValueError(f"GLC: {n} target samples are too few for {num_clusters} negative clusters per "
                         "class")
    feats = F.normalize(features.float(), dim=1)
    top = probs.float().topk(n_pos, dim=0)  # values/indices (n_pos, C)
    # one class at a time: gathering every class's positives at once holds C * n_pos = N / coefficient rows
    positive = F.normalize(torch.stack([feats[top.indices[:, cls]].mean(0) for cls in range(c)]), dim=1)
    prior = rho + (1 - rho) * top.values.mean(0)
    similarity = feats @ positive.T  # (N, C)
    labels = similarity.argmax(1)
    negative_max = torch.empty(n, dtype=feats.dtype, device=feats.device)
    for cls in range(c):
        is_negative = torch.ones(n, dtype=torch.bool, device=feats.device)
        is_negative[top.indices[:, cls]] = False
        negatives = is_negative.nonzero().squeeze(1)
        if max_points_per_centroid is not None and negatives.numel() > max_points_per_centroid * num_clusters:
            sample = torch.randperm(negatives.numel(), generator=torch.Generator().manual_seed(seed + cls))
            kept = sample[: max_points_per_centroid * num_clusters].sort().values
            negatives = negatives[kept.to(negatives.device)]
        centroids, _ = kmeans(feats[negatives], num_clusters, iters=kmeans_iters, seed=seed + cls)
        members = labels == cls
        negative_max[members] = (feats[members] @ F.normalize(centroids, dim=1).T).max(1).values
    known = prior[labels] * similarity.gather(1, labels[:, None]).squeeze(1) > negative_max
    targets = torch.full((n, c), 1.0 / c, dtype=feats.dtype, device=feats.device)
    targets[known] = F.one_hot(labels[known], c).to(feats.dtype)
    return {"targets": targets, "labels": labels, "known": known, "prior": prior}
