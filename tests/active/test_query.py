"""Source-free active DA: budget, query strategies, sealed labels, annotators, rounds, resume, DDP."""

import numpy as np
import pytest
import torch

from sfda.active import contrastive_scores, margin, query_lowest


def test_contrastive_scores_match_a_numpy_reference():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 4, generator=gen).softmax(1)
    previous = torch.rand(50, 4, generator=gen).softmax(1)
    alpha, kappa, lam = 0.03, 10, 0.1
    p, q = probs.numpy().astype(np.float64), previous.numpy().astype(np.float64)
    u = p + alpha * (p - q)
    top = np.sort(u, axis=1)
    U = top[:, -1] - top[:, -2]
    voters = np.argsort(-U, kind="stable")[:kappa]
    counts = np.bincount(p.argmax(1)[voters], minlength=4)
    expected = U / U.max() + lam * (counts / counts.max())[p.argmax(1)]
    got = contrastive_scores(probs, previous, alpha, kappa, lam)
    assert np.allclose(got.numpy(), expected, atol=1e-6)
    # round 1 (previous = current): plain margin, rescaled, plus the balance term
    assert torch.allclose(contrastive_scores(probs, probs, alpha, kappa, 0.0),
                          margin(probs) / margin(probs).max())


def test_classes_the_model_is_sure_about_are_queried_less():
    # two samples with the same margin: the one predicted as the class most confident samples
    # share scores higher
    probs = torch.tensor([[0.9, 0.1, 0.0]] * 8 + [[0.55, 0.45, 0.0], [0.0, 0.45, 0.55]])
    scores = contrastive_scores(probs, probs, kappa=8, balance=0.1)
    assert scores[8] > scores[9]
    assert query_lowest(scores, 1).tolist() == [9]


def test_query_lowest_is_stable_and_refuses_more_than_the_pool():
    assert query_lowest(torch.tensor([0.5, 0.1, 0.1, 0.9]), 2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="cannot query 5 samples from a pool of 4"):
        query_lowest(torch.zeros(4), 5)
