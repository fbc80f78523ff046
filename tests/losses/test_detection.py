"""Detection engine pieces: VOC AP by hand, pseudo-box selection, LPLD's loss, and driving
torchvision's Faster R-CNN part by part (background is class 0)."""

import pytest
import torch

from sfda.losses.detection import lpl_class_targets, lpld_distillation


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


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
