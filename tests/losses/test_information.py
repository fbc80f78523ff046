"""Losses and label-free metrics against direct loop implementations of the formulas."""


import torch

from sfda.losses import (
    information_maximization,
    masked_information_maximization,
)


def test_information_maximization_formula():
    p = torch.tensor([[0.7, 0.3], [0.1, 0.9]])
    h = lambda q: -(q * torch.log(q + 1e-5)).sum(-1)  # noqa: E731
    assert torch.allclose(information_maximization(p), h(p).mean() - h(p.mean(0)))


def test_masked_im_is_im_of_the_masked_rows():
    probs = torch.randn(12, 5).softmax(1)
    mask = torch.tensor([True, False] * 6)
    assert torch.allclose(masked_information_maximization(probs, mask), information_maximization(probs[mask]),
                          atol=1e-6)
    assert torch.allclose(masked_information_maximization(probs, torch.ones(12, dtype=torch.bool)),
                          information_maximization(probs))
