"""Unit tests of the pseudo-label engine against brute-force references."""

import math

import numpy as np
import torch

from sfda.pseudo_labels import (
    class_balanced_mask,
    confidence_mask,
    entropy_2means_threshold,
    normalised_entropy,
    unknown_by_entropy_2means,
)


def test_selection_rules():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8]])
    assert confidence_mask(probs, 0.7).tolist() == [True, False, False, True]
    assert torch.allclose(normalised_entropy(probs)[1], torch.tensor(1.0), atol=1e-4)
    # class 0 holds rows 0-2 (row 1 ties to 0): ceil(0.5 * 3) = 2 most confident kept; class 1: row 3
    assert class_balanced_mask(probs, 0.5).tolist() == [True, False, True, True]
    unknown = unknown_by_entropy_2means(torch.tensor([[0.99, 0.01]] * 5 + [[0.5, 0.5]] * 3))
    assert unknown.tolist() == [False] * 5 + [True] * 3


def test_entropy_two_means_threshold_matches_sklearn():
    from sklearn.cluster import KMeans

    probs = torch.cat([torch.randn(200, 10) * 6, torch.randn(100, 10) * 0.3]).softmax(1)
    h = normalised_entropy(probs).numpy().reshape(-1, 1)
    reference = KMeans(2, init=np.array([[0.0], [1.0]]), n_init=1).fit(h).cluster_centers_.mean()
    assert math.isclose(entropy_2means_threshold(probs), reference, rel_tol=1e-4)
