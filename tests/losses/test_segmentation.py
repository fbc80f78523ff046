"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import torch

from sfda.losses import class_ratio_kl, predicted_class_ratio, weighted_entropy
from sfda.pseudo_labels import class_fractions


# losses ---------------------------------------------------------------------------------------
def test_weighted_entropy_matches_its_formula():
    probs = torch.softmax(torch.randn(2, 3, 4, 5), dim=1)
    nu = torch.tensor([0.2, 0.3, 0.5])
    expected = -sum(nu[k] * (probs[:, k] * torch.log(probs[:, k] + 1e-10)).sum()
                    for k in range(3)) / (2 * 4 * 5)
    assert torch.allclose(weighted_entropy(probs, nu), expected)


def test_class_ratio_of_one_hot_predictions_is_the_class_fraction_and_kl_is_zero_at_the_prior():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0, :2] = 1  # 25% foreground in image 0, none in image 1
    probs = torch.nn.functional.one_hot(labels, 2).movedim(-1, 1).float()
    ratio = predicted_class_ratio(probs)
    assert torch.allclose(ratio, torch.tensor([[0.75, 0.25], [1.0, 0.0]]))
    assert torch.allclose(ratio, class_fractions(labels, 2))
    for direction in ("adami", "adaent"):
        assert class_ratio_kl(ratio, ratio, direction).abs() < 1e-6
        assert class_ratio_kl(ratio, torch.tensor([[0.5, 0.5], [0.5, 0.5]]), direction) > 0.1


def test_kl_directions_differ_and_a_zero_prior_pushes_the_class_to_zero_in_adami():
    ratio = torch.tensor([[0.7, 0.3]], requires_grad=True)
    prior = torch.tensor([[1.0, 0.0]])
    adami = class_ratio_kl(ratio, prior, "adami")
    adami.backward()
    assert ratio.grad[0, 1] > ratio.grad[0, 0]  # gradient descent lowers the absent class's size
    assert not torch.isclose(adami, class_ratio_kl(ratio.detach(), prior, "adaent"))


def test_no_nan_when_a_class_is_absent_from_the_batch():
    probs = torch.zeros(4, 2, 8, 8)
    probs[:, 0] = 1.0  # every pixel certainly background: the brain class is absent
    probs.requires_grad_(True)
    prior = torch.tensor([[1.0, 0.0]] * 4)
    loss = weighted_entropy(probs, torch.tensor([0.1, 0.9])) \
        + class_ratio_kl(predicted_class_ratio(probs), prior)
    loss = loss + class_ratio_kl(predicted_class_ratio(probs), prior, "adaent")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(probs.grad).all()
