"""Detection methods end to end on tiny real inputs: Mean Teacher and LPLD steps, evaluation,
predictions in original-image pixels, source training, and artifacts of the wrong task."""

import pytest
import torch
from kits.detection import detection_inputs, target_data, trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from sfda.methods import MeanTeacherDetection


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return detection_inputs(tmp_path_factory.mktemp("detection"))


def test_mean_teacher_without_confident_boxes_trains_images_as_background(inputs, tmp_path):
    method = MeanTeacherDetection(str(inputs["artifact"]), confidence=0.999)
    run = trainer(tmp_path, limit_val_batches=0)
    loud = "NO box scoring above model.confidence 0.999 on ANY of the 8 target images"
    with pytest.warns(UserWarning, match=loud) as seen:
        run.fit(method, datamodule=target_data(inputs))
    assert run.logged_metrics["train/hpl_per_image"] == 0 and torch.isfinite(run.logged_metrics["train/loss"])
    assert sum("model.confidence" in str(w.message) for w in seen) == 1  # one per epoch, not per step


def test_the_teacher_a_run_validates_and_saves_has_the_epoch_s_update(inputs, tmp_path):
    method = MeanTeacherDetection(str(inputs["artifact"]), confidence=0.0)
    source = {k: v.clone() for k, v in method.network.state_dict().items()}
    validated = []
    original = method.validation_step

    def spy(batch, batch_idx):
        validated.append({k: v.clone() for k, v in method.teacher.model.state_dict().items()})
        return original(batch, batch_idx)

    method.validation_step = spy
    run = trainer(tmp_path, limit_train_batches=2, accumulate_grad_batches=2, limit_val_batches=1,
                  enable_checkpointing=True, callbacks=[ModelCheckpoint(tmp_path / "ckpt", save_last=True)])
    run.fit(method, datamodule=target_data(inputs))
    teacher, student = method.teacher.model.state_dict(), method.network.state_dict()
    moved = next(k for k, v in source.items() if v.is_floating_point() and not torch.equal(v, student[k]))
    # one update, before validation: 0.75 source + 0.25 student (Lightning validates before the epoch end)
    assert torch.allclose(validated[0][moved], 0.75 * source[moved] + 0.25 * student[moved], atol=1e-6)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    # the validated teacher is the final and the saved one
    assert all(torch.equal(validated[0][k], v) and torch.equal(saved[f"teacher.model.{k}"], v)
               for k, v in teacher.items())
    assert {"target/ap50", "target_student/ap50"} <= set(run.callback_metrics)  # both networks scored

