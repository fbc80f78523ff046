"""Pose losses, metrics and network, each against a small reference computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sfda.losses.pose import heatmap_im, joints_mse, pose_contrastive, residual_kl, spatial_probabilities


def softmax(values: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in values)
    return [math.exp(v) / total for v in values]


def test_joints_mse_is_half_the_mean_square_over_labelled_joints():
    predicted = torch.tensor([[[[1.0, 0.0]], [[0.5, 0.5]]]])  # (1, 2 joints, 1, 2)
    weight = torch.tensor([[1.0, 0.0]])  # the second joint is not labelled
    assert joints_mse(predicted, torch.zeros_like(predicted), weight).item() == pytest.approx(0.5 * 1 / 4)


def test_residual_kl_masks_both_peaks_and_compares_the_rest():
    source = torch.tensor([0.9, 0.2, 0.1, 0.4]).reshape(1, 1, 2, 2)  # peak at position 0
    intermediate = torch.tensor([0.5, 0.3, 0.8, 0.0]).reshape(1, 1, 2, 2)  # peak at position 2
    p_s, p_i = softmax([0.2, 0.4]), softmax([0.3, 0.0])  # positions 1 and 3 remain
    expected = sum(i * math.log(i / s) for i, s in zip(p_i, p_s, strict=True))
    assert residual_kl(source, intermediate).item() == pytest.approx(expected, rel=1e-5)
    assert residual_kl(source, source).item() == pytest.approx(0.0, abs=1e-7)
    p_s, p_i = softmax([0.1, 0.2]), softmax([0.15, 0.0])  # temperature 2 halves the logits
    expected = sum(i * math.log(i / s) for i, s in zip(p_i, p_s, strict=True))
    assert residual_kl(source, intermediate, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_spatial_probabilities_are_softmaxes_of_the_row_and_column_means():
    heatmap = torch.tensor([[1.0, 2.0], [3.0, 5.0]]).reshape(1, 1, 2, 2)
    py, px = spatial_probabilities(heatmap)
    assert py[0, 0].tolist() == pytest.approx(softmax([1.5, 4.0]))
    assert px[0, 0].tolist() == pytest.approx(softmax([2.0, 3.5]))


def test_pose_contrastive_against_two_joints_by_hand():
    heatmaps = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])  # (1 image, 2 joints, h 1, w 2)
    p, q = softmax([0.0, 1.0])
    cross = 2 * p * q / (p * p + q * q)  # cos(P^x of joint 0, P^x of joint 1); P^y is [1] for both
    # s(0,0) = s(1,1) = 1, s(0,1) = s(1,0) = (1 + cross) / 2: -log(1 / (2 + 1 + cross))
    assert pose_contrastive(heatmaps, heatmaps).item() == pytest.approx(math.log(3 + cross), rel=1e-5)


def test_heatmap_im_against_two_images_by_hand():
    heatmaps = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 0.0]]]])  # (2 images, 1 joint, 1, 2)
    p, q = softmax([0.0, 1.0])
    marginal = -(p * math.log(p) + q * math.log(q))  # H(P^x) of each image; H(P^y) = 0
    expected = (0.0 + marginal - math.log(2)) / 2  # the batch-mean heatmap is flat: entropy log 2
    assert heatmap_im(heatmaps).item() == pytest.approx(expected, rel=1e-5)


def test_residual_kl_has_finite_gradients_at_the_masked_peaks():
    source = torch.rand(2, 3, 4, 4)
    intermediate = torch.rand(2, 3, 4, 4, requires_grad=True)
    residual_kl(source, intermediate).backward()
    assert torch.isfinite(intermediate.grad).all()
