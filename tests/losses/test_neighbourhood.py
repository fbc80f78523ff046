"""Losses and label-free metrics against direct loop implementations of the formulas."""

import math

import torch

from sfda.losses import attract_disperse, weighted_neighbour_affinity


def test_attract_disperse_matches_loops():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(4, 3, generator=gen).softmax(1)
    s = torch.rand(4, 2, 3, generator=gen).softmax(-1)
    ref_attract = -sum(float(s[i, j] @ p[i]) for i in range(4) for j in range(2)) / 4
    ref_disperse = sum(float(p[i] @ p[m]) for i in range(4) for m in range(4) if m != i) / 4
    assert math.isclose(attract_disperse(p, s, p, 0.5).item(), ref_attract + 0.5 * ref_disperse, rel_tol=1e-5)


def test_weighted_neighbour_affinity_matches_loops():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    w = torch.tensor([[2.0], [0.1]])
    assert math.isclose(weighted_neighbour_affinity(p, s, w).item(), -(2.0 * 0.5 + 0.1 * 0.0) / 2,
                        rel_tol=1e-6)
