"""A tiny pose artifact (an untrained CPU-sized SimpleBaseline) for the pose tests, generated figures
beside it, and the target data and trainer the pose method tests run them with."""

from __future__ import annotations

import lightning as L
import torch

from kits.trainers import quiet_trainer
from sfda.data import InputSpec, PoseDataModule
from sfda.data.benchmarks.pose_figures import JOINTS, generate
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


def pose_inputs(root) -> dict:
    """Generated figures under ``root`` (24 flat, 16 photo, 8 photo test) and ``root/pose.pt``."""
    return {
        "flat": generate(root, "flat", "train", count=24),
        "photo": generate(root, "photo", "train", count=16),
        "test": generate(root, "photo", "test", count=8),
        "artifact": pose_artifact(root / "pose.pt"),
        "root": root,
    }


def target_data(inputs, **kwargs) -> PoseDataModule:
    """The photo figures of ``pose_inputs`` as target data (batches of 8), their test set as eval."""
    return PoseDataModule(
        [str(inputs["photo"])],
        eval=[str(inputs["test"])],
        role="target",
        batch_size=8,
        eval_batch_size=8,
        **kwargs,
    )


def trainer(tmp_path, **kwargs) -> L.Trainer:
    """A quiet CPU trainer logging to ``tmp_path``; unlike the detection kit's, the caller sets the epochs
    (or steps)."""
    return quiet_trainer(tmp_path, **kwargs)
