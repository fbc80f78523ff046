"""Unit tests of the pseudo-label engine against brute-force references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

from sfda.pseudo_labels import (
    centroid_labels,
    kmeans,
)


def shot_reference(features: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The official SHOT obtain_label in numpy (distance 'cosine', threshold 0, one extra round)."""
    fea = np.concatenate([features, np.ones((len(features), 1))], 1)
    fea = fea / np.linalg.norm(fea, axis=1, keepdims=True)
    k = probs.shape[1]
    aff = probs
    initc = aff.T @ fea / (1e-8 + aff.sum(0)[:, None])
    labelset = np.where(np.eye(k)[probs.argmax(1)].sum(0) > 0)[0]
    pred = labelset[cdist(fea, initc[labelset], "cosine").argmin(1)]
    aff = np.eye(k)[pred]
    initc = aff.T @ fea / (1e-8 + aff.sum(0)[:, None])
    return labelset[cdist(fea, initc[labelset], "cosine").argmin(1)]


def test_centroid_labels_match_official_shot_procedure():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 10, generator=gen) * 3
    truth = torch.randint(0, 4, (400,), generator=gen)
    features = centres[truth] + torch.randn(400, 10, generator=gen)
    logits = torch.randn(400, 5, generator=gen)  # class 4 never argmax after masking below
    logits[:, :4] += F.one_hot(truth, 4) * 1.0
    logits[:, 4] -= 10
    probs = logits.softmax(1)
    ours = centroid_labels(features, probs).numpy()
    assert np.array_equal(ours, shot_reference(features.double().numpy(), probs.double().numpy()))
    assert (ours != 4).all()  # a class with no argmax gets no samples
    # clustering corrects labels
    assert (ours == truth.numpy()).mean() > (probs.argmax(1) == truth).float().mean().item()


def test_kmeans_recovers_separated_clusters_deterministically():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(50, 2, generator=gen) for c in centres])
    c1, l1 = kmeans(x, 3, seed=7)
    c2, l2 = kmeans(x, 3, seed=7)
    assert torch.equal(l1, l2)
    for block in range(3):  # every true cluster lands in one k-means cluster
        assert l1[block * 50 : (block + 1) * 50].unique().numel() == 1
    with pytest.raises(ValueError, match="k="):
        kmeans(x, 500)


@pytest.mark.parametrize("cosine", [False, True])
def test_kmeans_in_blocks_is_kmeans_on_the_whole_set(monkeypatch, cosine):
    """k-means measures (and, cosine, normalises) the points block by block, so no normalised copy of all
    N rows exists: the clusters are those of Lloyd's algorithm on the whole normalised set (a reference
    written here), whatever the block size."""
    from sfda.pseudo_labels import clustering

    gen = torch.Generator().manual_seed(3)
    centres = torch.randn(4, 6, generator=gen) * 3
    x = torch.randn(301, 6, generator=gen) + centres[torch.randint(0, 4, (301,), generator=gen)]
    points = F.normalize(x, dim=1) if cosine else x
    reference_gen = torch.Generator().manual_seed(5)  # the reference: k-means++ then Lloyd, all rows at once
    first = int(torch.randint(301, (1,), generator=reference_gen))
    centroids = points[first : first + 1]
    closest = torch.cdist(points, centroids).squeeze(1) ** 2
    for _ in range(1, 4):
        pick = int(torch.multinomial(closest + 1e-12, 1, generator=reference_gen))
        centroids = torch.cat([centroids, points[pick : pick + 1]])
        closest = torch.minimum(closest, torch.cdist(points, points[pick : pick + 1]).squeeze(1) ** 2)
    for _ in range(50):
        labels = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        updated = sums / torch.bincount(labels, minlength=4).clamp(min=1)[:, None]
        centroids = F.normalize(updated, dim=1) if cosine else updated
    labels = torch.cdist(points, centroids).argmin(1)
    for block in (7, 64, 10_000):
        monkeypatch.setattr(clustering, "KMEANS_BLOCK_ROWS", block)
        got_centroids, got_labels = kmeans(x.clone(), 4, seed=5, cosine=cosine)
        assert torch.equal(got_labels, labels)
        assert torch.allclose(got_centroids, centroids, atol=1e-5)


def test_rows_normalised_in_place_equal_f_normalize():
    """SHOT's augmented features are normalised inside their own tensor (one (N, D+1) tensor, not two): the
    values are exactly ``F.normalize``'s, a zero row included."""
    from sfda.pseudo_labels.clustering import augment_and_normalise, normalise_rows_

    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(1))
    x[3] = 0
    expected = F.normalize(x, dim=1)
    assert torch.equal(normalise_rows_(x.clone()), expected)
    ones = torch.ones(50, 1)
    assert torch.equal(augment_and_normalise(x), F.normalize(torch.cat([x, ones], dim=1), dim=1))
