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
