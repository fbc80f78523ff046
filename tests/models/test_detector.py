"""Detection engine pieces: VOC AP by hand, pseudo-box selection, LPLD's loss, and driving
torchvision's Faster R-CNN part by part (background is class 0)."""


import pytest
import torch
from kits.detection import SPEC
from torch import nn

from sfda.methods import LPLD
from sfda.models import ArtifactError
from sfda.models.detector import faster_rcnn, freeze_batchnorm
from sfda.models.detector_parts import teacher_view


def test_frozen_batchnorm_keeps_the_source_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].running_mean.uniform_()
    x = torch.randn(2, 3, 8, 8)
    expected = net.eval()(x)
    frozen = freeze_batchnorm(net).train()  # train mode: a frozen layer still uses the stored statistics
    assert torch.allclose(frozen(x), expected, atol=1e-6)


@pytest.mark.parametrize("backbone", ["resnet18_fpn", "resnet50_fpn", "mobilenet_v3_fpn"])
def test_every_backbone_builds_a_detector_with_background_at_zero(backbone):
    torch.manual_seed(0)
    model = faster_rcnn(2, 128, SPEC.mean, SPEC.std, backbone=backbone).eval()
    assert model.roi_heads.box_predictor.cls_score.out_features == 3 and model.rpn.score_thresh == 0.0
    with torch.no_grad():
        out = model([torch.rand(3, 128, 128)])[0]
    assert out["boxes"].shape[1] == 4 and (out["labels"] >= 1).all()  # class 0 is background, never predicted
    with pytest.raises(ValueError, match="model.backbone: expected one of"):
        faster_rcnn(2, 128, SPEC.mean, SPEC.std, backbone="vgg16")


def test_a_torchvision_detector_trained_elsewhere_is_wrapped_from_a_recipe_mapping(tmp_path):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    kwargs = {
        "weights": None,
        "weights_backbone": None,
        "num_classes": 3,
        "min_size": 640,
        "max_size": 640,
        "box_score_thresh": 0.0,
    }  # the model resizes 320-pixel inputs to 640 internally
    net = fasterrcnn_mobilenet_v3_large_320_fpn(**kwargs)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    source = {
        "architecture": "torchvision.models.detection:fasterrcnn_mobilenet_v3_large_320_fpn",
        "weights": str(tmp_path / "weights.pt"),
        "task": "detection",
        "class_names": ["car", "person"],
        "kwargs": kwargs,
        "input": {"size": 320, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    method = LPLD(source)
    assert method.network.transform.min_size == (640,)  # one size: teacher and student see the same input
    assert (
        method.teacher.model.rpn.score_thresh == 0.0
    )  # the MobileNet default 0.05 would delete LPL candidates
    assert method.teacher.model.rpn._post_nms_top_n["testing"] == 300
    view_input = torch.rand(2, 3, 320, 320)

    view = teacher_view(method.teacher.model.eval(), view_input)
    assert len(view.proposals) == 2 and all(len(p) <= 300 for p in view.proposals)
    # HPL targets are in input pixels (the student's transform scales them once); IoU with proposals in the
    # model's 640-pixel frame
    assert len(view.detections[0]["boxes"]) > 0 and view.image_sizes[0] == (640, 640)
    assert torch.allclose(view.model_boxes[0], view.detections[0]["boxes"] * 2, atol=1e-3)
    with pytest.raises(ArtifactError, match="is not a torchvision-style detector"):
        LPLD(
            {
                **source,
                "architecture": "torch.nn:Linear",
                "kwargs": {"in_features": 1, "out_features": 1},
                "weights": str(tmp_path / "linear.pt"),
            }
        ) if torch.save(torch.nn.Linear(1, 1).state_dict(), tmp_path / "linear.pt") is None else None
