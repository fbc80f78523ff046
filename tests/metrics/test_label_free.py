"""Losses and label-free metrics against direct loop implementations of the formulas."""

from __future__ import annotations

import torch

from sfda.metrics import LabelFreeScores, soft_neighbourhood_density


def test_snd_matches_brute_force_and_rewards_clusters():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(30, 4, generator=gen).softmax(1)
    n = torch.nn.functional.normalize(p, dim=1)
    sims = n @ n.T / 0.05
    sims.fill_diagonal_(-float("inf"))
    q = sims.softmax(1)
    ref = -(q * torch.log(q + 1e-5)).sum(1).mean()
    assert torch.allclose(soft_neighbourhood_density(p, block_elements=7 * len(p)), ref, atol=1e-4)


def test_snd_of_a_large_set_is_that_of_a_fixed_seeded_subset():
    """SND is O(N^2): above ``max_samples`` rows it is the SND of a seeded subset, the same at every call."""
    p = torch.rand(100, 4, generator=torch.Generator().manual_seed(2)).softmax(1)
    keep = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:40].sort().values
    assert torch.allclose(soft_neighbourhood_density(p, max_samples=40), soft_neighbourhood_density(p[keep]))
    assert soft_neighbourhood_density(p, max_samples=40) == soft_neighbourhood_density(p, max_samples=40)
    assert not torch.allclose(soft_neighbourhood_density(p, max_samples=40), soft_neighbourhood_density(p))


def one_hot(labels: list[int], classes: int = 3, confidence: float = 0.98) -> torch.Tensor:
    probs = torch.full((len(labels), classes), (1 - confidence) / (classes - 1))
    probs[torch.arange(len(labels)), torch.tensor(labels)] = confidence
    return probs


def test_label_free_scores_drop_padded_repeats_and_compute_what_their_inputs_allow():
    probs, strong = one_hot([0, 1, 2, 1]), one_hot([0, 1, 0, 1])
    features = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    once, padded = LabelFreeScores(), LabelFreeScores()
    once.update(probs, torch.arange(4), features=features, strong=strong)
    padded.update(probs[:2], torch.tensor([0, 1]), features=features[:2], strong=strong[:2])
    padded.update(probs[2:], torch.tensor([2, 3]), features=features[2:], strong=strong[2:])
    padded.update(
        probs[:1], torch.tensor([0]), features=features[:1], strong=strong[:1]
    )  # a sampler's repeat
    a, b = once.compute(), padded.compute()
    assert set(a) == {"entropy", "im", "snd", "bnm", "class_ami", "view_agreement", "marginal_entropy"}
    assert all(torch.allclose(a[k], b[k]) for k in a)
    assert float(a["view_agreement"]) == 0.75
    plain = LabelFreeScores()
    plain.update(probs, torch.arange(4))
    # no features, strong view or teacher
    assert set(plain.compute()) == {"entropy", "im", "snd", "bnm", "marginal_entropy"}
