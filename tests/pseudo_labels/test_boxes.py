"""Detection engine pieces: VOC AP by hand, pseudo-box selection, LPLD's loss, and driving
torchvision's Faster R-CNN part by part (background is class 0)."""

import pytest
import torch

from sfda.pseudo_labels.boxes import confident_detections, matched_boxes, max_overlap, refined_boxes


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_pseudo_box_pieces_guard_empty_sets_and_keep_background_proposals_raw():
    assert max_overlap(t([[0, 0, 5, 5]]), torch.zeros(0, 4)).tolist() == [
        0.0
    ]  # box_iou(n, 0).max() would fail
    assert max_overlap(t([[0, 0, 10, 10]]), t([[0, 0, 10, 5], [0, 0, 10, 10]])).tolist() == [1.0]
    kept = confident_detections(
        [
            {
                "boxes": t([[0, 0, 1, 1], [0, 0, 2, 2]]),
                "scores": t([0.71, 0.7]),
                "labels": torch.tensor([3, 4]),
            }
        ],
        0.7,
    )
    assert kept[0]["labels"].tolist() == [3]
    from torchvision.models.detection._utils import BoxCoder

    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    proposals = t([[10, 10, 20, 20], [30, 30, 40, 40]])
    regression = torch.zeros(2, 3 * 4)
    regression[:, 4] = 1.0  # class 1 moves x by 1 box-width / 10
    logits = t([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])  # argmax: background, then class 1
    refined = refined_boxes(proposals, logits, regression, coder, (100, 100))
    assert torch.equal(refined[0], proposals[0]) and refined[1, 0] == pytest.approx(31.0)


def test_matched_boxes_counts_boxes_overlapping_a_reference_at_iou_half_or_more():
    boxes = t([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]])  # IoU 1, 0.5 with the first reference; none
    references = t([[0, 0, 10, 10], [100, 100, 110, 110]])
    assert matched_boxes(boxes, references) == 2
    assert matched_boxes(boxes, torch.zeros(0, 4)) == 0 and matched_boxes(torch.zeros(0, 4), references) == 0
