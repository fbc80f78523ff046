"""Universal DA: class-split protocols, H-score, GLC engine pieces against references, SHOT-O/GLC runs."""

import math

import pytest
import torch
import torch.nn.functional as F

from sfda.pseudo_labels import (
    kmeans,
    one_vs_all_pseudo_labels,
    select_num_clusters,
    silhouette_score,
)


# engine pieces -------------------------------------------------------------------------------
def test_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score as reference

    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(1))
    assert math.isclose(silhouette_score(x, labels, chunk_size=64), reference(x.numpy(), labels.numpy()),
                        rel_tol=1e-4)


def test_cluster_count_selection_finds_well_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(10, 32, generator=gen), dim=1) * 5
    x = centres.repeat_interleave(60, 0) + 0.3 * torch.randn(600, 32, generator=gen)
    chosen, scores = select_num_clusters(x, num_source_classes=10)
    assert chosen == 1.0 and max(scores, key=scores.get) == 1.0
    with pytest.raises(ValueError, match="fewer than the largest candidate cluster count 30"):
        select_num_clusters(x[:20], num_source_classes=10)


def brute_force_one_vs_all(feats, probs, coef, rho, seed):
    """Direct transcription of GLC steps 2-3 (every class evaluated for every sample)."""
    n, c = probs.shape
    feats = F.normalize(feats, dim=1)
    k, n_pos = int(c * coef), int(n / (c * coef))
    pos_sim, neg_sim, prior = torch.zeros(n, c), torch.zeros(n, c), torch.zeros(c)
    for cls in range(c):
        order = torch.argsort(probs[:, cls], descending=True, stable=True)
        top = order[:n_pos]
        proto = F.normalize(feats[top].mean(0), dim=0)
        prior[cls] = rho + (1 - rho) * probs[top, cls].mean()
        negative = torch.ones(n, dtype=torch.bool)
        negative[top] = False
        centroids, _ = kmeans(feats[negative], k, iters=100, seed=seed + cls)
        pos_sim[:, cls] = feats @ proto
        neg_sim[:, cls] = (feats @ F.normalize(centroids, dim=1).T).max(1).values
    labels = pos_sim.argmax(1)
    positive = prior[None] * pos_sim > neg_sim
    known = positive[torch.arange(n), labels]
    return labels, known


def test_one_vs_all_labels_match_a_brute_force_transcription():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(400, 16, generator=gen)
    probs = (torch.randn(400, 6, generator=gen) * 2).softmax(1)
    out = one_vs_all_pseudo_labels(feats, probs, coefficient=0.5, rho=0.75, seed=0)
    labels, known = brute_force_one_vs_all(feats, probs, 0.5, 0.75, 0)
    assert torch.equal(out["labels"], labels) and torch.equal(out["known"], known)
    assert 0 < known.float().mean() < 1
    uniform = out["targets"][~out["known"]]
    assert torch.allclose(uniform, torch.full_like(uniform, 1 / 6))
    assert torch.equal(out["targets"][out["known"]].argmax(1), labels[out["known"]])


def test_negative_kmeans_is_fitted_on_a_seeded_sample_of_points_per_centroid(monkeypatch):
    """As faiss (the official call): at most 256 points per centroid train the negative k-means."""
    import sfda.pseudo_labels.universal as universal

    fitted = []
    real_kmeans = universal.kmeans
    monkeypatch.setattr(universal, "kmeans",
                        lambda x, k, **kw: (fitted.append(x), real_kmeans(x, k, **kw))[1])
    gen = torch.Generator().manual_seed(4)
    feats, probs = torch.randn(3000, 8, generator=gen), (torch.randn(3000, 5, generator=gen) * 2).softmax(1)
    # K_hat 5, n_pos 600: 2400 negatives per class
    first = one_vs_all_pseudo_labels(feats, probs, coefficient=1.0, seed=0)
    again = one_vs_all_pseudo_labels(feats, probs, coefficient=1.0, seed=0)
    full = one_vs_all_pseudo_labels(feats, probs, coefficient=1.0, seed=0, max_points_per_centroid=None)
    assert [x.shape[0] for x in fitted] == [256 * 5] * 10 + [2400] * 5
    assert torch.equal(first["known"], again["known"]) and torch.equal(first["labels"], full["labels"])
    normed = torch.nn.functional.normalize(feats, dim=1)
    for cls, sample in enumerate(fitted[:5]):  # distinct rows drawn from the class's negatives only
        rows = torch.cdist(sample, normed).argmin(1)
        positives = probs[:, cls].topk(600).indices
        assert rows.unique().numel() == 256 * 5 and not torch.isin(rows, positives).any()
