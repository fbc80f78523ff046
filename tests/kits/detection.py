"""Tiny real detection inputs: digit canvases (the benchmark's generator, few images) and a
Faster R-CNN detection artifact (untrained, CPU-sized), and the target data and trainer the detection
method tests run them with."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from kits.trainers import quiet_trainer
from sfda.data import DetectionDataModule
from sfda.data.benchmarks.digit_detection import generate
from sfda.data.fetch import data_root
from sfda.data.transforms import InputSpec
from sfda.models import SourceArtifact
from sfda.models.detector import detector_architecture, faster_rcnn

SPEC = InputSpec(size=128, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
SMALL = {
    "fpn_channels": 16,
    "levels": [3, 4],
    "representation_size": 32,
    "rois_per_image": 32,
    "proposals_per_image": 100,
}
DIGITS = [str(d) for d in range(10)]


def digit_sets(root: Path, train: int = 8, test: int = 4) -> dict[str, Path]:
    """COCO annotations of ``train`` plain and ``train`` photo canvases and ``test`` photo test canvases."""
    return {
        "plain": generate(root, "plain", "train", train, digits_root=data_root()),
        "photo": generate(root, "photo", "train", train, digits_root=data_root()),
        "photo_test": generate(root, "photo", "test", test, digits_root=data_root()),
    }


def detection_artifact(path: Path, class_names: list[str] = DIGITS, seed: int = 0) -> Path:
    """An untrained CPU-sized Faster R-CNN written as an sfda detection artifact."""
    torch.manual_seed(seed)
    architecture = detector_architecture(len(class_names), SPEC.size, SPEC.mean, SPEC.std, **SMALL)
    network = faster_rcnn(**architecture["kwargs"])
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    SourceArtifact(
        architecture=architecture,
        state_dict=state,
        class_names=list(class_names),
        input=SPEC,
        task="detection",
    ).save(path)
    return path


def detection_inputs(root: Path) -> dict:
    """``digit_sets`` under ``root``, a detection artifact ``root/detector.pt`` ("artifact") and "root"."""
    return {**digit_sets(root), "artifact": detection_artifact(root / "detector.pt"), "root": root}


def target_data(inputs, **kwargs) -> DetectionDataModule:
    """The photo canvases of ``detection_inputs`` as target data (batches of 4), their test set as eval."""
    return DetectionDataModule(
        [str(inputs["photo"])],
        eval=[str(inputs["photo_test"])],
        role="target",
        batch_size=4,
        eval_batch_size=4,
        **kwargs,
    )


def trainer(tmp_path, **kwargs) -> L.Trainer:
    """A quiet one-epoch CPU trainer logging to ``tmp_path`` (``kwargs`` override any setting)."""
    return quiet_trainer(tmp_path, **{"max_epochs": 1, **kwargs})
