"""Pose losses, metrics and network, each against a small reference computed by hand."""

from __future__ import annotations

import pytest
import torch

from sfda.data.benchmarks.pose_figures import JOINTS
from sfda.methods import PoseSFDA
from sfda.models import ArtifactError
from sfda.models.pose import SimpleBaseline, pose_architecture, simple_baseline


def test_simple_baseline_makes_heatmaps_at_a_quarter_of_the_input():
    network = simple_baseline(16, "resnet18", deconv_channels=32)
    assert network(torch.zeros(2, 3, 64, 64)).shape == (2, 16, 16, 16)
    assert {name for name, _ in network.named_children()} == {"backbone", "decoder"}
    grey = SimpleBaseline(14, "resnet18", 32, in_channels=1)
    assert grey(torch.zeros(1, 1, 128, 128)).shape == (1, 14, 32, 32)
    assert pose_architecture(16)["target"] == "sfda.models.pose:simple_baseline"
    with pytest.raises(ValueError, match="model.backbone: expected one of"):
        simple_baseline(16, "resnet34")


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
