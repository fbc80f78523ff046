"""Pose losses, metrics and network, each against a small reference computed by hand."""

from __future__ import annotations

import pytest
import torch

from sfda.metrics.pose import PCK, heatmap_peaks


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
