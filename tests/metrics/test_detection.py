"""Detection engine pieces: VOC AP by hand, pseudo-box selection, LPLD's loss, and driving
torchvision's Faster R-CNN part by part (background is class 0)."""

from __future__ import annotations

import pytest
import torch

from sfda.metrics.detection import coco_scores, detection_scores, voc_scores


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_voc_ap_of_a_hand_worked_example():
    references = [
        {"boxes": t([[0, 0, 10, 10]]), "labels": torch.tensor([0])},
        {"boxes": t([[20, 20, 30, 30]]), "labels": torch.tensor([0])},
    ]
    predictions = [
        {
            "boxes": t([[0, 0, 10, 11], [0, 0, 10, 10], [50, 50, 60, 60]]),
            "scores": t([0.9, 0.85, 0.8]),
            "labels": torch.tensor([0, 0, 0]),
        },
        {"boxes": t([[20, 20, 30, 30]]), "scores": t([0.7]), "labels": torch.tensor([0])},
    ]
    # sorted: TP (0.9), duplicate of the same reference = FP (0.85), FP (0.8), TP (0.7)
    # recall 0.5 0.5 0.5 1; precision 1 .5 .33 .5
    # -> area: 0.5 * 1 + 0.5 * 0.5; 11-point: (6 * 1 + 5 * 0.5) / 11
    scores = voc_scores(predictions, references, ["digit"])
    assert scores["ap50"] == pytest.approx(0.75) and scores["ap50/digit"] == pytest.approx(0.75)
    assert scores["ap50_11pt"] == pytest.approx(8.5 / 11)
    assert coco_scores(predictions, references)["map_50"] == pytest.approx(0.75, abs=0.01)


def test_classes_without_references_do_not_enter_the_mean():
    references = [{"boxes": t([[0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    predictions = [
        {"boxes": t([[0, 0, 10, 10], [5, 5, 9, 9]]), "scores": t([0.9, 0.9]), "labels": torch.tensor([1, 0])}
    ]
    scores = voc_scores(predictions, references, ["a", "b"])
    assert scores["ap50"] == 1.0 and "ap50/a" not in scores


DIGITS = [str(d) for d in range(10)]


def test_a_detection_on_a_crowd_region_is_neither_a_hit_nor_a_false_positive():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])  # an ordinary box, then a crowd region
    ordinary = {"boxes": boxes, "labels": torch.tensor([3, 3])}
    crowd = {**ordinary, "iscrowd": torch.tensor([0, 1])}
    both = {"boxes": boxes.flip(0), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([3, 3])}
    real_only = {"boxes": boxes[:1], "scores": torch.tensor([0.8]), "labels": torch.tensor([3])}
    # the crowd region is not a reference to find ...
    assert detection_scores([real_only], [ordinary], DIGITS)["ap50"] == pytest.approx(0.5)
    scores = detection_scores([real_only], [crowd], DIGITS)
    assert scores["ap50"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)
    # ... and a detection on it, even the highest scored, is not a false positive
    scores = detection_scores([both], [crowd], DIGITS)
    assert scores["ap50"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)
