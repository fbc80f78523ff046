"""Detection methods end to end on tiny real inputs: Mean Teacher and LPLD steps, evaluation,
predictions in original-image pixels, source training, and artifacts of the wrong task."""

import lightning as L
import pytest
import torch
from kits.detection import detection_artifact, digit_sets
from lightning.pytorch.loggers import CSVLogger

from sfda.data import DetectionDataModule
from sfda.methods import MeanTeacherDetection


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    return {**digit_sets(root), "artifact": detection_artifact(root / "detector.pt"), "root": root}


def target_data(inputs, **kwargs):
    return DetectionDataModule(
        [str(inputs["photo"])],
        eval=[str(inputs["photo_test"])],
        role="target",
        batch_size=4,
        eval_batch_size=4,
        **kwargs,
    )


def trainer(tmp_path, **kwargs):
    return L.Trainer(
        max_epochs=1,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kwargs,
    )


def test_mean_teacher_without_confident_boxes_trains_images_as_background(inputs, tmp_path):
    method = MeanTeacherDetection(str(inputs["artifact"]), confidence=0.999)
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(method, datamodule=target_data(inputs))
    assert run.logged_metrics["train/hpl_per_image"] == 0 and torch.isfinite(run.logged_metrics["train/loss"])
