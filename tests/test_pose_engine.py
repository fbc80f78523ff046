"""Pose losses, metrics and network, each against a small reference computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sfda.losses.pose import heatmap_im, joints_mse, pose_contrastive, residual_kl, spatial_probabilities
from sfda.metrics.pose import PCK, heatmap_peaks
from sfda.models.pose import SimpleBaseline, pose_architecture, simple_baseline


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


def test_heatmap_peaks_and_pck_per_joint():
    heatmaps = torch.zeros(2, 2, 4, 5)
    heatmaps[0, 0, 1, 3] = heatmaps[0, 1, 2, 0] = heatmaps[1, 0, 3, 4] = heatmaps[1, 1, 0, 1] = 1.0
    peaks, values = heatmap_peaks(heatmaps)
    assert peaks.tolist() == [[[3, 1], [0, 2]], [[4, 3], [1, 0]]] and values.min() == 1
    target = torch.tensor([[[3.0, 1.5], [2.0, 2.0]], [[4.0, 3.0], [1.0, 0.0]]])
    weight = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # joint 1 of image 1 not labelled
    metric = PCK(["a", "b"], threshold=0.5)
    metric.update(peaks, target, weight, torch.tensor([2.0, 2.0]))  # distances / 2: 0.25, 1.0, 0, (-)
    scores = metric.compute()
    assert scores["pck/a"].item() == 1.0 and scores["pck/b"].item() == 0.0
    assert scores["pck"].item() == pytest.approx(2 / 3)


def test_pck_of_two_halves_summed_is_the_pck_of_the_whole():
    torch.manual_seed(0)
    predicted, target = torch.rand(10, 3, 2) * 8, torch.rand(10, 3, 2) * 8
    weight, scale = (torch.rand(10, 3) > 0.2).float(), torch.full((10,), 4.0)
    whole = PCK(["a", "b", "c"], 0.5)
    whole.update(predicted, target, weight, scale)
    halves = [PCK(["a", "b", "c"], 0.5) for _ in range(2)]
    for part, rows in zip(halves, (slice(0, 4), slice(4, 10)), strict=True):
        part.update(predicted[rows], target[rows], weight[rows], scale[rows])
    halves[0].merge_state(halves[1])  # what the sum reduction over processes does
    assert {k: v.item() for k, v in halves[0].compute().items()} == {
        k: v.item() for k, v in whole.compute().items()
    }


def test_simple_baseline_makes_heatmaps_at_a_quarter_of_the_input():
    network = simple_baseline(16, "resnet18", deconv_channels=32)
    assert network(torch.zeros(2, 3, 64, 64)).shape == (2, 16, 16, 16)
    assert {name for name, _ in network.named_children()} == {"backbone", "decoder"}
    grey = SimpleBaseline(14, "resnet18", 32, in_channels=1)
    assert grey(torch.zeros(1, 1, 128, 128)).shape == (1, 14, 32, 32)
    assert pose_architecture(16)["target"] == "sfda.models.pose:simple_baseline"
    with pytest.raises(ValueError, match="model.backbone: expected one of"):
        simple_baseline(16, "resnet34")


def test_residual_kl_has_finite_gradients_at_the_masked_peaks():
    source = torch.rand(2, 3, 4, 4)
    intermediate = torch.rand(2, 3, 4, 4, requires_grad=True)
    residual_kl(source, intermediate).backward()
    assert torch.isfinite(intermediate.grad).all()
