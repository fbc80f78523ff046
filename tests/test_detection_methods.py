"""Detection methods end to end on tiny real inputs: Mean Teacher and LPLD steps, evaluation,
predictions in original-image pixels, source training, and artifacts of the wrong task."""

import json

import lightning as L
import pytest
import torch
from conftest import ROOT, results_of, run_sfda
from detection_kit import DIGITS, detection_artifact, digit_sets
from lightning.pytorch.loggers import CSVLogger

from sfda.data import DetectionDataModule
from sfda.methods import LPLD, SHOT, DetectionSourceOnly, MeanTeacherDetection
from sfda.models import ArtifactError
from sfda.tasks.writers.detections import to_original

LOOSE = {
    "confidence": 0.0,
    "min_foreground": 0.0,
    "max_background": 1.0,
}  # an untrained teacher still yields LPLs


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


def test_lpld_trains_the_student_on_strong_views_with_an_eval_mode_teacher(inputs, tmp_path):
    L.seed_everything(0)
    method = LPLD(str(inputs["artifact"]), **LOOSE)
    source = {k: v.clone() for k, v in method.network.state_dict().items()}
    modes = []
    original = method.extra_loss

    def spy(batch, targets, outputs):
        modes.append((method.teacher.model.training, method.network.training, "strong" in batch))
        return original(batch, targets, outputs)

    method.extra_loss = spy
    run = trainer(tmp_path)
    run.fit(method, datamodule=target_data(inputs))
    assert modes and all(
        m == (False, True, True) for m in modes
    )  # teacher eval, student train, strong view given
    logged = run.logged_metrics
    assert (
        logged["train/hpl_per_image"] > 0
        and logged["train/lpl_candidates"] > 0
        and logged["train/lpl_kept"] > 0
    )
    student = method.network.state_dict()
    moved = [k for k in source if source[k].is_floating_point() and not torch.equal(source[k], student[k])]
    assert moved  # the student trained
    teacher = method.teacher.model.state_dict()
    key = moved[0]  # the epoch-end EMA: 0.75 teacher (still the source) + 0.25 student
    assert torch.allclose(teacher[key], 0.75 * source[key] + 0.25 * student[key], atol=1e-6)
    assert "source_only/ap50" in method.results and "target/ap50" in run.callback_metrics
    assert {k.split(".")[0] for k in method.state_dict()} == {"network", "teacher"}  # no source copy saved


def test_mean_teacher_without_confident_boxes_trains_images_as_background(inputs, tmp_path):
    method = MeanTeacherDetection(str(inputs["artifact"]), confidence=0.999)
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(method, datamodule=target_data(inputs))
    assert run.logged_metrics["train/hpl_per_image"] == 0 and torch.isfinite(run.logged_metrics["train/loss"])


def test_predictions_are_written_in_original_image_pixels(inputs, tmp_path):
    # 64-pixel tiles of the 128-pixel canvases, each resized to the model's 128: scale 0.5, offsets 0 or 64
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert to_original(boxes, torch.tensor([64.0, 0.0, 128.0, 64.0]), torch.tensor([0.5, 0.5])).tolist() == [
        [69.0, 10.0, 79.0, 20.0]
    ]
    method = DetectionSourceOnly(str(inputs["artifact"]))
    run = trainer(tmp_path)
    run.predict(method, datamodule=target_data(inputs, tile_size=64, tile_overlap=0.0))
    run_dir = tmp_path / "lightning_logs" / "version_0"
    payload = json.loads((run_dir / "detections.json").read_text())
    assert len(payload["images"]) == 4 * 4 and {c["name"] for c in payload["categories"]} == set(DIGITS)
    windows = {tuple(im["window"]) for im in payload["images"]}
    assert windows == {
        (0.0, 0.0, 64.0, 64.0),
        (64.0, 0.0, 128.0, 64.0),
        (0.0, 64.0, 64.0, 128.0),
        (64.0, 64.0, 128.0, 128.0),
    }
    assert payload["annotations"]  # an untrained detector still returns boxes above 0.05
    for det in payload["annotations"]:
        window = payload["images"][[im["id"] for im in payload["images"]].index(det["image_id"])]["window"]
        x, y, w, h = det["bbox"]
        assert window[0] - 0.01 <= x and x + w <= window[2] + 0.01 and window[1] - 0.01 <= y <= window[3]
    assert len(list((run_dir / "overlays").glob("*.png"))) == 16


def test_an_artifact_of_the_wrong_task_is_refused_naming_the_file(inputs, mnist_source):
    with pytest.raises(
        ArtifactError, match=r"detector.pt is a 'detection' artifact; SHOT adapts classification models only"
    ):
        SHOT(str(inputs["artifact"]))
    with pytest.raises(
        ArtifactError, match=r"source.pt is a 'classification' artifact; LPLD adapts detection models only"
    ):
        LPLD(str(mnist_source))


@pytest.mark.slow  # a CLI subprocess run
def test_source_training_writes_a_detection_artifact_that_adaptation_loads(inputs, tmp_path):
    recipe = ROOT / "recipes/detection/digits_photos/source.yaml"
    artifact = tmp_path / "source.pt"
    run_sfda(
        "fit",
        "--config",
        str(recipe),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=1",
        f"--model.init_args.artifact={artifact}",
        f"--data.init_args.train=[{inputs['plain']}]",
        "--data.init_args.batch_size=2",
    )
    results = results_of(tmp_path)
    assert artifact.exists() and "source_val/best_ap50" in results and results["epochs"] == 1
    checkpoints = tmp_path / "version_0" / "checkpoints"
    last = checkpoints / "last.ckpt"  # a link to the epoch checkpoint, not a second copy
    assert (
        last.is_symlink()
        and last.resolve().parent == checkpoints.resolve()
        and len(list(checkpoints.iterdir())) == 2
    )
    method = LPLD(str(artifact))
    assert method.class_names == DIGITS and method.artifact.task == "detection"


@pytest.mark.ddp
def test_two_process_lpld_matches_one_process(inputs, tmp_path):
    common = [
        "fit",
        "--config",
        str(ROOT / "recipes/detection/digits_photos/lpld.yaml"),
        f"--model.init_args.source={inputs['artifact']}",
        "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu",
        f"--data.init_args.train=[{inputs['photo']}]",
        f"--data.init_args.eval=[{inputs['photo_test']}]",
        "--data.init_args.batch_size=4",
        "--data.init_args.eval_subset=1",  # one evaluation image: the second process has no batch to score
        *[f"--model.init_args.{k}={v}" for k, v in LOOSE.items()],
    ]
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_sfda(
        *common,
        f"--trainer.default_root_dir={tmp_path / 'two'}",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
    )
    one, two = results_of(tmp_path / "one"), results_of(tmp_path / "two")
    assert one["source_only/ap50"] == two["source_only/ap50"]
    state = [
        torch.load(tmp_path / run / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)[
            "state_dict"
        ]
        for run in ("one", "two")
    ]
    # the same pseudo-labels (the first epoch's teacher is the source model on the same weak views), the
    # same anchor and RoI samples (keyed by sample) and the same strong views: the same student and teacher
    weights = [k for k, v in state[0].items() if v.is_floating_point()]
    assert any(k.startswith("teacher.") for k in weights) and any(k.startswith("network.") for k in weights)
    worst = max((state[0][k] - state[1][k]).abs().max().item() for k in weights)
    assert worst < 1e-4, worst
    assert two["target/ap50"] == pytest.approx(one["target/ap50"], abs=1e-3)


def test_lpld_runs_in_bf16_mixed_precision(inputs, tmp_path):
    method = LPLD(str(inputs["artifact"]), **LOOSE)
    run = trainer(tmp_path, precision="bf16-mixed", limit_val_batches=1)
    run.fit(method, datamodule=target_data(inputs))
    assert torch.isfinite(run.logged_metrics["train/loss"]) and run.logged_metrics["train/lpl_kept"] > 0
    assert all(p.dtype == torch.float32 for p in method.network.parameters())  # mixed: weights stay fp32


def test_a_torchvision_detector_trained_elsewhere_is_wrapped_from_a_recipe_mapping(tmp_path):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    kwargs = {
        "weights": None,
        "weights_backbone": None,
        "num_classes": 3,
        "min_size": 640,
        "max_size": 640,
        "box_score_thresh": 0.0,
    }  # the model resizes 320-pixel inputs to 640 internally
    net = fasterrcnn_mobilenet_v3_large_320_fpn(**kwargs)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    source = {
        "architecture": "torchvision.models.detection:fasterrcnn_mobilenet_v3_large_320_fpn",
        "weights": str(tmp_path / "weights.pt"),
        "task": "detection",
        "class_names": ["car", "person"],
        "kwargs": kwargs,
        "input": {"size": 320, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    method = LPLD(source)
    assert method.network.transform.min_size == (640,)  # one size: teacher and student see the same input
    assert (
        method.teacher.model.rpn.score_thresh == 0.0
    )  # the MobileNet default 0.05 would delete LPL candidates
    assert method.teacher.model.rpn._post_nms_top_n["testing"] == 300
    view_input = torch.rand(2, 3, 320, 320)
    from sfda.models.detector_parts import teacher_view

    view = teacher_view(method.teacher.model.eval(), view_input)
    assert len(view.proposals) == 2 and all(len(p) <= 300 for p in view.proposals)
    # HPL targets are in input pixels (the student's transform scales them once); IoU with proposals in the
    # model's 640-pixel frame
    assert len(view.detections[0]["boxes"]) > 0 and view.image_sizes[0] == (640, 640)
    assert torch.allclose(view.model_boxes[0], view.detections[0]["boxes"] * 2, atol=1e-3)
    with pytest.raises(ArtifactError, match="is not a torchvision-style detector"):
        LPLD(
            {
                **source,
                "architecture": "torch.nn:Linear",
                "kwargs": {"in_features": 1, "out_features": 1},
                "weights": str(tmp_path / "linear.pt"),
            }
        ) if torch.save(torch.nn.Linear(1, 1).state_dict(), tmp_path / "linear.pt") is None else None
