"""Detection engine pieces: VOC AP by hand, pseudo-box selection, LPLD's loss, and driving
torchvision's Faster R-CNN part by part (background is class 0)."""

import pytest
import torch
from kits.detection import SMALL, SPEC

from sfda.models.detector import faster_rcnn, freeze_batchnorm
from sfda.models.detector_parts import proposals_with_objectness, teacher_view


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return freeze_batchnorm(faster_rcnn(3, SPEC.size, SPEC.mean, SPEC.std, **SMALL)).eval()


def test_the_rpn_driven_by_parts_gives_its_proposals_and_keeps_objectness(detector):
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        image_list, _ = detector.transform(list(images))
        features = detector.backbone(image_list.tensors)
        expected, _ = detector.rpn(image_list, features)
        proposals, objectness = proposals_with_objectness(detector, image_list, features)
    assert all(torch.equal(a, b) for a, b in zip(proposals, expected, strict=True))
    assert all(
        len(o) == len(p) and ((o >= 0) & (o <= 1)).all() for o, p in zip(objectness, proposals, strict=True)
    )
    view = teacher_view(detector, images)
    with torch.no_grad():
        plain = detector(list(images))
    for ours, theirs in zip(view.detections, plain, strict=True):
        assert torch.allclose(ours["boxes"], theirs["boxes"]) and torch.equal(
            ours["labels"], theirs["labels"]
        )
    assert view.logits.shape == (sum(len(p) for p in view.proposals), 4)
