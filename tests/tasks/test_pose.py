"""Pose on tiny generated figures (source training's artifact: ``tests/methods/test_registry.py``): Mean
Teacher's pseudo heatmaps follow the views, pose SFDA trains the right parts in the right order with
detached targets and the EMA into I, occlusion, predictions in original pixels, and bad input."""

from __future__ import annotations

import pytest
import torch
from kits.pose import pose_artifact, pose_inputs, target_data, trainer

from sfda.data.benchmarks.pose_figures import JOINTS
from sfda.methods import MeanTeacherPose, PoseSFDA
from sfda.models import ArtifactError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return pose_inputs(tmp_path_factory.mktemp("pose"))


def test_artifacts_of_another_task_or_other_joints_are_refused(inputs, tmp_path):
    from kits.detection import detection_artifact

    with pytest.raises(ArtifactError, match="is a 'detection' artifact; PoseSFDA adapts pose models only"):
        PoseSFDA(str(detection_artifact(tmp_path / "detector.pt")))
    method = MeanTeacherPose(str(pose_artifact(tmp_path / "other.pt", joints=[*JOINTS[:-1], "nose"])))
    with pytest.raises(ArtifactError, match="are not the source model's"):
        trainer(tmp_path, max_steps=1).fit(method, datamodule=target_data(inputs))
    method = MeanTeacherPose(str(pose_artifact(tmp_path / "fewer.pt", joints=JOINTS[:14])))
    with pytest.raises(ValueError, match="16 joints .* but the model predicts 14 heatmaps"):
        trainer(tmp_path, max_steps=1).fit(method, datamodule=target_data(inputs))


@pytest.mark.parametrize("method_class", [MeanTeacherPose, PoseSFDA])
def test_teacher_agreement_is_one_for_identical_ema_pairs_and_drops_when_they_differ(
    inputs, tmp_path, method_class
):
    method = method_class(str(inputs["artifact"]), evaluate_source=False)
    scores = trainer(tmp_path).validate(method, datamodule=target_data(inputs), verbose=False)[0]
    assert scores["label_free/teacher_agreement"] == 1.0  # before any step the pair is the source model twice
    with torch.no_grad():
        for parameter in method.paired_network().parameters():
            parameter.add_(torch.randn_like(parameter) * parameter.std().nan_to_num(0.1))
    scores = trainer(tmp_path).validate(method, datamodule=target_data(inputs), verbose=False)[0]
    assert 0.0 <= scores["label_free/teacher_agreement"] < 0.9
