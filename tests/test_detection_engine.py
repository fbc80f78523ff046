"""Detection engine pieces: VOC AP by hand, pseudo-box selection, LPLD's loss, and driving
torchvision's Faster R-CNN part by part (background is class 0)."""

import pytest
import torch
from detection_kit import SMALL, SPEC
from torch import nn

from sfda.losses.detection import lpl_class_targets, lpld_distillation
from sfda.metrics.detection import coco_scores, voc_scores
from sfda.models.detector import faster_rcnn, freeze_batchnorm
from sfda.models.detector_parts import proposals_with_objectness, teacher_view
from sfda.models.keyed_sampling import KeyedSampler
from sfda.pseudo_labels.boxes import confident_detections, max_overlap, refined_boxes


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


def test_lpl_class_relation_uses_foreground_classes_with_background_at_zero():
    logits = t([[0.0, 8.0, 0.0], [9.0, 5.0, 0.0], [0.0, 1.0, 1.0]])
    targets, keep = lpl_class_targets(logits, 0.9, 0.99)
    assert targets[:, 0].tolist() == pytest.approx(
        [1e-9] * 3
    )  # the background slot is class 0 in torchvision
    assert targets[:, 1:].sum(1).tolist() == pytest.approx([1.0, 1.0, 1.0])  # softmax over foreground only
    # row 0: confident foreground; row 1: foreground relation 0.99 but background 0.98 <= 0.99 (kept);
    # row 2: relation split 50/50 (refused)
    assert keep.tolist() == [True, True, False]
    assert lpl_class_targets(t([[12.0, 5.0, 0.0]]), 0.9, 0.99)[1].tolist() == [False]  # background 0.999


def test_lpld_loss_is_weighted_by_feature_disagreement():
    targets, _ = lpl_class_targets(t([[0.0, 6.0, 0.0], [0.0, 0.0, 6.0]]))
    student = torch.zeros(2, 3, requires_grad=True)
    features = torch.randn(2, 8)
    assert lpld_distillation(targets, student, features, features).item() == pytest.approx(0.0, abs=1e-6)
    loss = lpld_distillation(targets, student, features, -features)  # w = 2
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0
    empty = lpld_distillation(targets[:0], student[:0], features[:0], features[:0])
    assert empty.item() == 0 and empty.requires_grad


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


def test_frozen_batchnorm_keeps_the_source_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].running_mean.uniform_()
    x = torch.randn(2, 3, 8, 8)
    expected = net.eval()(x)
    frozen = freeze_batchnorm(net).train()  # train mode: a frozen layer still uses the stored statistics
    assert torch.allclose(frozen(x), expected, atol=1e-6)


def test_keyed_sampling_does_not_depend_on_how_the_batch_is_split():
    matched = [torch.randint(-1, 3, (500,)) for _ in range(4)]
    index = torch.tensor([10, 11, 12, 13])
    whole = KeyedSampler(64, 0.25, salt=1)
    whole.set_keys(index, seed=0, step=5)
    pos, neg = whole(matched)
    halves = KeyedSampler(64, 0.25, salt=1)
    for part in (slice(0, 2), slice(2, 4)):
        halves.set_keys(index[part], seed=0, step=5)
        p, n = halves(matched[part])
        assert all(torch.equal(a, b) for a, b in zip(p + n, pos[part] + neg[part], strict=True))
    whole.set_keys(index, seed=0, step=6)
    assert not all(
        torch.equal(a, b) for a, b in zip(whole(matched)[0], pos, strict=True)
    )  # a new draw each step
    with pytest.raises(RuntimeError, match="set_keys"):
        KeyedSampler(64, 0.25, salt=1)(matched)


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
