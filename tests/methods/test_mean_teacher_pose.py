"""Pose methods on tiny generated figures: source training writes an artifact adaptation loads, Mean
Teacher's pseudo heatmaps follow the views, pose SFDA trains the right parts in the right order with
detached targets and the EMA into I, occlusion, predictions in original pixels, and bad input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from kits.pose import SPEC, pose_inputs, target_data

from sfda.methods import MeanTeacherPose


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return pose_inputs(tmp_path_factory.mktemp("pose"))


def test_mean_teacher_pseudo_heatmaps_follow_a_mirrored_strong_view(inputs, monkeypatch):
    method = MeanTeacherPose(str(inputs["artifact"]), confidence=0.5)
    data = target_data(inputs)
    data.input_spec = SPEC
    item = data.dataset("train", train=True, strong=True)[(0, 0)]
    batch = {k: v[None] if torch.is_tensor(v) else v for k, v in item.items()}
    batch["strong_matrix"] = batch["matrix"].clone()
    batch["strong_matrix"][0, 0] = -batch["strong_matrix"][0, 0]  # mirror: x' = 63 - x
    batch["strong_matrix"][0, 0, 2] += 63
    teacher = torch.zeros(1, 16, 16, 16)
    teacher[0, 0, 5, 3] = 0.9  # r_ankle confidently at heatmap (3, 5): input (13.5, 21.5)
    teacher[0, 1, 8, 8] = 0.2  # r_knee below the confidence
    monkeypatch.setattr(method.task, "heatmaps_of", lambda module, images, network: teacher)
    monkeypatch.setattr(method, "_trainer", SimpleNamespace(datamodule=data))
    monkeypatch.setattr(method, "log", lambda *args, **kwargs: None)  # no real trainer to log to
    targets, weight = method.task.teacher_targets(method, method.teacher.model, batch, method.confidence)
    assert weight[0].tolist() == [0, 0, 0, 0, 0, 1] + [0] * 10  # r_ankle is l_ankle in the mirrored view
    row, col = divmod(int(targets[0, 5].argmax()), 16)
    assert (col, row) == (12, 5)  # x: (63 - 13.5 + 0.5) / 4 - 0.5 = 12


def test_ema_source_share_sets_the_teachers_momentum_from_the_steps_and_the_gate_is_logged(inputs, tmp_path):
    import lightning as L
    from kits.pose import trainer

    L.seed_everything(0)
    method = MeanTeacherPose(str(inputs["artifact"]), evaluate_source=False, ema_source_share=0.1)
    run = trainer(tmp_path, max_epochs=2, limit_train_batches=2)
    run.fit(method, datamodule=target_data(inputs))
    assert method.teacher.momentum == pytest.approx(0.1 ** (1 / 4))  # 2 epochs x 2 steps
    assert method.results["ema/momentum"] == pytest.approx(method.teacher.momentum)
    assert float(run.callback_metrics["train/ema_source_share"]) == pytest.approx(0.1, rel=1e-4)
    assert 0.0 <= float(run.callback_metrics["train/confidence_gate"]) <= 1.0
    with pytest.raises(ValueError, match="model.ema_source_share: give either"):
        MeanTeacherPose(str(inputs["artifact"]), ema_momentum=0.99, ema_source_share=0.1)
    with pytest.raises(ValueError, match=r"model.ema_momentum: expected an EMA momentum in \(0, 1\)"):
        MeanTeacherPose(str(inputs["artifact"]), ema_momentum=1.0)
