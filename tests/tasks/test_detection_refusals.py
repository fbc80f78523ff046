"""The bad-input catalogue, annotation files that lie: COCO boxes, COCO keypoints and medical volumes.
Every refusal asserts the exit status (through the CLI) or the error, that the message names the file
and the field and the expected value, and that the user's files are unchanged. Crowd regions are
checked to be neither trained on nor scored. All cases run in-process on tiny real files."""

from __future__ import annotations

import pytest
import torch

from sfda.tasks.detection import DetectionTask

DIGITS = [str(d) for d in range(10)]


def test_gathered_evaluation_rows_pass_the_crowd_flags_to_the_scores():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    rows = {
        "boxes": [boxes[1:]],
        "scores": [torch.tensor([0.9])],
        "labels": [torch.tensor([3])],
        "ref_boxes": [boxes],
        "ref_labels": [torch.tensor([3, 3])],
        "ref_ignored": [torch.tensor([0, 1])],
        "labelled": torch.tensor([1]),
    }
    task = DetectionTask(DIGITS, None)
    assert task.score_rows(None, rows, "target")["target/ap50"] == pytest.approx(0.0)
    rows["ref_ignored"] = [torch.tensor([1, 0])]
    assert task.score_rows(None, rows, "target")["target/ap50"] == pytest.approx(1.0)
