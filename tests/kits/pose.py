"""A tiny pose artifact (an untrained CPU-sized SimpleBaseline) for the pose tests."""

from __future__ import annotations

import torch

from sfda.data import InputSpec
from sfda.data.benchmarks.pose_figures import JOINTS
from sfda.models import SourceArtifact
from sfda.models.pose import pose_architecture, simple_baseline

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
