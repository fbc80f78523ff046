"""Detection methods end to end on tiny real inputs: Mean Teacher and LPLD steps, evaluation,
predictions in original-image pixels, source training, and artifacts of the wrong task."""

import pytest
import torch
from kits.detection import detection_inputs, target_data, trainer

from sfda.methods import MeanTeacherDetection


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return detection_inputs(tmp_path_factory.mktemp("detection"))


def test_mean_teacher_without_confident_boxes_trains_images_as_background(inputs, tmp_path):
    method = MeanTeacherDetection(str(inputs["artifact"]), confidence=0.999)
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(method, datamodule=target_data(inputs))
    assert run.logged_metrics["train/hpl_per_image"] == 0 and torch.isfinite(run.logged_metrics["train/loss"])
