"""Pose methods on tiny generated figures (source training's artifact: test_method_registry.py): Mean
Teacher's pseudo heatmaps follow the views, pose SFDA trains the right parts in the right order with
detached targets and the EMA into I, occlusion, predictions in original pixels, and bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from sfda.data import InputSpec, PoseDataModule
from sfda.data.benchmarks.pose_figures import JOINTS, generate
from sfda.methods import MeanTeacherPose, PoseSFDA
from sfda.methods.pose_sfda import occlude
from sfda.models import ArtifactError, SourceArtifact
from sfda.models.pose import pose_architecture, simple_baseline
from sfda.tasks.writers.keypoints import coco_results

SPEC = InputSpec(size=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def pose_artifact(path, joints=JOINTS, seed=0):
    """An untrained CPU-sized SimpleBaseline written as a pose artifact."""
    torch.manual_seed(seed)
    architecture = pose_architecture(len(joints), "resnet18", 16)
    state = {k: v.clone() for k, v in simple_baseline(**architecture["kwargs"]).state_dict().items()}
    SourceArtifact(
        architecture=architecture, state_dict=state, class_names=list(joints), input=SPEC, task="pose"
    ).save(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    return {
        "flat": generate(root, "flat", "train", count=24),
        "photo": generate(root, "photo", "train", count=16),
        "test": generate(root, "photo", "test", count=8),
        "artifact": pose_artifact(root / "pose.pt"),
        "root": root,
    }


def target_data(inputs, **kwargs) -> PoseDataModule:
    return PoseDataModule(
        [str(inputs["photo"])],
        eval=[str(inputs["test"])],
        role="target",
        batch_size=8,
        eval_batch_size=8,
        **kwargs,
    )


def trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kwargs,
    )


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
    targets, weight = method.task.teacher_targets(method, method.teacher.model, batch, method.confidence)
    assert weight[0].tolist() == [0, 0, 0, 0, 0, 1] + [0] * 10  # r_ankle is l_ankle in the mirrored view
    row, col = divmod(int(targets[0, 5].argmax()), 16)
    assert (col, row) == (12, 5)  # x: (63 - 13.5 + 0.5) / 4 - 0.5 = 12


def run_sfda_steps(inputs, tmp_path, monkeypatch, steps=1, **kwargs):
    L.seed_everything(0)
    method = PoseSFDA(str(inputs["artifact"]), evaluate_source=False, occlusion=0.0, **kwargs)
    nets = {"source": method.source_net, "intermediate": method.network, "target": method.target_net}
    before = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    backward = method.manual_backward
    seen = []

    def spy(loss):  # which networks does each backward reach?
        for net in nets.values():
            net.zero_grad(set_to_none=True)
        backward(loss)
        seen.append({name for name, net in nets.items() if any(p.grad is not None for p in net.parameters())})

    monkeypatch.setattr(method, "manual_backward", spy)
    per_step = 3 if method.source_protect else 1  # global_step counts optimizer steps
    trainer(tmp_path, max_steps=per_step * steps, limit_val_batches=0).fit(
        method, datamodule=target_data(inputs)
    )
    after = {name: net.state_dict() for name, net in nets.items()}
    return method, before, after, seen


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [
        k for k in before if k.startswith(prefix) and before[k].is_floating_point() and "running" not in k
    ]
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_pose_sfda_updates_s_i_t_in_order_with_detached_targets_and_the_ema_into_i(
    inputs, tmp_path, monkeypatch
):
    method, before, after, seen = run_sfda_steps(inputs, tmp_path, monkeypatch)
    assert seen == [{"source"}, {"intermediate"}, {"target"}]  # S, I, T; no loss reaches another network
    # all three start as the source model: S(x) = I(x), so L_S, L_I and their gradients are 0 at step 1
    assert not changed(before["source"], after["source"], "")
    assert changed(before["target"], after["target"], "backbone") and changed(
        before["target"], after["target"], "decoder"
    )
    for key, value in before["intermediate"].items():  # I moved only by its EMA towards T (parameters)
        if key in dict(method.network.named_parameters()):
            assert torch.allclose(
                after["intermediate"][key], value.lerp(after["target"][key], 0.001), atol=1e-7
            ), key
    assert method.evaluated_network() is method.network  # I is evaluated


def test_pose_sfda_trains_s_decoder_only_once_s_and_i_differ(inputs, tmp_path, monkeypatch):
    _, before, after, seen = run_sfda_steps(inputs, tmp_path, monkeypatch, steps=2)
    assert seen == [{"source"}, {"intermediate"}, {"target"}] * 2
    assert changed(before["source"], after["source"], "decoder")
    assert not changed(before["source"], after["source"], "backbone")


def test_without_source_protect_only_t_trains_and_i_follows(inputs, tmp_path, monkeypatch):
    _, before, after, seen = run_sfda_steps(inputs, tmp_path, monkeypatch, source_protect=False)
    assert seen == [{"target"}]
    assert not changed(before["source"], after["source"], "")


def test_adaptive_occlusion_pastes_a_patch_of_the_same_image_over_each_joint():
    image = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    joints = [torch.tensor([[8.0, 8.0]]), torch.tensor([[4.0, 4.0]])]
    out = occlude(
        image, joints, [True, False], 4, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    )
    assert torch.equal(out[1], image[1])  # not chosen: untouched
    patch = out[0, :, 6:10, 6:10]
    assert not torch.equal(patch, image[0, :, 6:10, 6:10])
    sources = [image[0, :, t : t + 4, s : s + 4] for t in range(13) for s in range(13)]
    assert any(torch.equal(patch, src) for src in sources)  # a patch of the same image
    again = occlude(
        image, joints, [True, False], 4, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    )
    assert torch.equal(out, again)


def test_predictions_go_back_to_original_image_pixels(inputs):
    data = target_data(inputs)
    data.input_spec = SPEC
    data.setup()
    item = data.dataset("test")[0]
    prediction = {
        "index": torch.tensor([0]),
        "matrix": item["matrix"][None],
        "keypoints": item["keypoints"][None],
        "scores": torch.ones(1, 16),
    }
    result = coco_results(prediction, data)[0]
    person = data.splits["test"][0]
    points = torch.tensor(result["keypoints"]).reshape(16, 3)
    labelled = torch.from_numpy(person.keypoints[:, 2] > 0)
    assert torch.allclose(
        points[labelled, :2].double(), torch.from_numpy(person.keypoints[:, :2])[labelled], atol=1e-2
    )
    assert result["image_id"] == person.image_id and json.dumps(result)


def test_artifacts_of_another_task_or_other_joints_are_refused(inputs, tmp_path):
    from detection_kit import detection_artifact

    with pytest.raises(ArtifactError, match="is a 'detection' artifact; PoseSFDA adapts pose models only"):
        PoseSFDA(str(detection_artifact(tmp_path / "detector.pt")))
    method = MeanTeacherPose(str(pose_artifact(tmp_path / "other.pt", joints=[*JOINTS[:-1], "nose"])))
    with pytest.raises(ArtifactError, match="are not the source model's"):
        trainer(tmp_path, max_steps=1).fit(method, datamodule=target_data(inputs))
    method = MeanTeacherPose(str(pose_artifact(tmp_path / "fewer.pt", joints=JOINTS[:14])))
    with pytest.raises(ValueError, match="16 joints .* but the model predicts 14 heatmaps"):
        trainer(tmp_path, max_steps=1).fit(method, datamodule=target_data(inputs))


def test_a_heatmap_model_trained_elsewhere_is_wrapped_from_a_recipe_mapping(tmp_path):
    """Bring your own heatmap model: its class and state dict named by the recipe (task: pose)."""
    torch.manual_seed(0)
    network = simple_baseline(16, "resnet18", 16)
    torch.save(network.state_dict(), tmp_path / "weights.pt")
    source = {
        "task": "pose",
        "architecture": "sfda.models.pose:SimpleBaseline",
        "weights": str(tmp_path / "weights.pt"),
        "class_names": list(JOINTS),
        "kwargs": {"num_joints": 16, "deconv_channels": 16},
        "input": {"size": 64, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    method = PoseSFDA(source)
    assert method.artifact.task == "pose" and method.class_names == list(JOINTS)
    for key, value in network.state_dict().items():
        assert torch.equal(method.target_net.state_dict()[key], value)
    with pytest.raises(ArtifactError, match="expected 'classification', 'detection' or 'pose'"):
        PoseSFDA({**source, "task": "keypoints"})


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
