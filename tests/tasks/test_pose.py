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
    with pytest.raises(ValueError, match="16 joints .* but the source model predicts 14 heatmaps"):
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


# the oracle: source training that starts from a source artifact ---------------------------------------
def test_source_training_can_start_from_an_artifact_of_the_same_model_and_refuses_another(tmp_path):
    import pytest
    from kits.pose import SPEC, pose_artifact, pose_inputs, trainer

    from sfda.data import PoseDataModule
    from sfda.models import ArtifactError, load_source
    from sfda.tasks.optim import Optim
    from sfda.tasks.pose import PoseSourceTraining

    inputs = pose_inputs(tmp_path)
    frozen = Optim(name="adam", lr=1e-12, weight_decay=0.0, power=0.0)  # the start is what is written

    def fit(start, channels=16):
        data = PoseDataModule([str(inputs["photo"])], role="source", input=SPEC, batch_size=8)
        method = PoseSourceTraining("resnet18", channels, artifact=None, optim=frozen, start_from=str(start))
        trainer(tmp_path / f"run{channels}", max_epochs=1, limit_train_batches=1).fit(method, datamodule=data)
        return method

    method = fit(inputs["artifact"])
    start = load_source(str(inputs["artifact"])).state_dict
    weights = method.network.state_dict()
    convolutions = [k for k in start if k.endswith("weight") and weights[k].dim() > 1]
    assert convolutions and all(torch.allclose(weights[k], start[k], atol=1e-9) for k in convolutions)
    other = pose_artifact(tmp_path / "other.pt", seed=1)  # same model, other weights: accepted
    assert fit(other) is not None
    with pytest.raises(ArtifactError, match="model.start_from: .* field 'architecture'"):
        fit(inputs["artifact"], channels=32)
