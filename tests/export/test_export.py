"""``sfda export``: every task's evaluated network in every format, checked against PyTorch on the run's
own target inputs, with its preprocessing spec and model card; and the refusals (no run folder, no
checkpoint, an output folder that holds files), which change nothing."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
import yaml
from conftest import ROOT, SEGMENTATION_RECIPES, run_sfda
from kits.bad_input import snapshot
from kits.detection import detection_inputs
from kits.pose import pose_inputs

from sfda.commands import main
from sfda.export.formats import FILE_NAMES, FORMATS


def export(*args: str) -> tuple[int, str]:
    """``sfda export <args>`` in-process: (exit status, stderr + stdout)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["export", *args])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return code, err.getvalue() + out.getvalue()


def exported_everything(run_dir, task: str, outputs: tuple[str, ...], method: str,
                        formats: tuple[str, ...] = FORMATS) -> dict:
    """Export ``run_dir`` in every format; check the files, the spec and the parity record of each.
    Returns {format: parity.json}."""
    parities = {}
    for fmt in formats:
        code, text = export(str(run_dir), "--format", fmt)
        assert code == 0, text[-3000:]
        folder = run_dir / "export" / fmt
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [FILE_NAMES[fmt], "preprocessing.json", "parity.json", "MODEL_CARD.md"])
        spec = json.loads((folder / "preprocessing.json").read_text())
        assert spec["task"] == task and spec["format"] == fmt and set(spec["outputs"]) == set(outputs)
        parity = json.loads((folder / "parity.json").read_text())
        assert parity["passed"] and set(parity["outputs"]) == set(outputs)
        assert all(f["max_abs_diff"] <= f["allowed"] for f in parity["outputs"].values())
        card = (folder / "MODEL_CARD.md").read_text()
        assert method in card and "## Parity with PyTorch" in card
        assert f"parity with PyTorch on {parity['inputs'][0]} target inputs" in text
        parities[fmt] = parity
    return parities


# --- refusals: they name the folder or field and change nothing --------------------------------------
def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    before = snapshot(tmp_path)
    code, text = export(str(tmp_path), "--format", "onnx")
    assert code == 1 and f"RUN_DIR {tmp_path}: not a run folder (no config.yaml or run_info.json)" in text
    code, text = export(str(tmp_path / "missing"), "--format", "onnx")
    assert code == 1 and "no such folder" in text
    assert snapshot(tmp_path) == before


@pytest.fixture()
def run_without_checkpoint(tmp_path):
    run = tmp_path / "runs" / "shot" / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"class_path": "sfda.methods.SHOT"}}))
    (run / "run_info.json").write_text(json.dumps({"stage": "test", "method": "SHOT"}))
    (run / "results.json").write_text(json.dumps({"target/acc": 0.5}))
    return run


def test_a_run_without_a_checkpoint_is_refused_by_name(run_without_checkpoint):
    before = snapshot(run_without_checkpoint)
    code, text = export(str(run_without_checkpoint), "--format", "torchscript")
    assert code == 1 and "no checkpoint to export (no checkpoints/last.ckpt)" in text
    code, text = export(str(run_without_checkpoint), "--format", "onnx", "--ckpt", "selected")
    assert code == 1 and "selected no checkpoint (its recipe had no selection.by)" in text
    code, text = export(str(run_without_checkpoint), "--format", "onnx", "--ckpt", "nowhere.ckpt")
    assert code == 1 and "--ckpt nowhere.ckpt: no such checkpoint file" in text
    assert snapshot(run_without_checkpoint) == before


def test_a_recorded_selection_that_is_gone_and_a_source_training_run_are_refused(run_without_checkpoint):
    (run_without_checkpoint / "checkpoints").mkdir()
    (run_without_checkpoint / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    (run_without_checkpoint / "results.json").write_text(json.dumps(
        {"selected/checkpoint": "checkpoints/selected.ckpt"}))
    code, text = export(str(run_without_checkpoint), "--format", "onnx")
    assert code == 1 and "selected checkpoints/selected.ckpt (results.json), which does not exist" in text
    (run_without_checkpoint / "run_info.json").write_text(json.dumps({"method": "DetectionSourceTraining"}))
    code, text = export(str(run_without_checkpoint), "--format", "onnx")
    assert code == 1 and "a source-training run; its result is the source artifact" in text


def test_an_output_folder_that_holds_files_is_never_overwritten(run_without_checkpoint):
    (run_without_checkpoint / "checkpoints").mkdir()
    (run_without_checkpoint / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    out = run_without_checkpoint.parent / "deploy"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the user's earlier export")
    before = snapshot(run_without_checkpoint.parent)
    code, text = export(str(run_without_checkpoint), "--format", "onnx", "--out", str(out))
    assert code == 1 and f"--out {out}: already holds files; sfda export never overwrites" in text
    assert snapshot(run_without_checkpoint.parent) == before


def test_an_unknown_format_is_refused_with_the_choices(run_without_checkpoint):
    code, text = export(str(run_without_checkpoint), "--format", "tflite")
    assert code == 2 and "invalid choice: 'tflite'" in text and "onnx" in text


# --- every task, every format (real runs, one epoch) ----------------------------------------------------
def fit_one_epoch(recipe: str, root, source, train, test, batch: int, *extra: str) -> None:
    """``sfda fit`` of ``recipe`` for one epoch on the kit's ``source``, ``train`` and ``test`` sets, into
    ``root/runs``."""
    run_sfda("fit", "--config", str(ROOT / recipe), f"--model.init_args.source={source}",
             f"--data.init_args.train=[{train}]", f"--data.init_args.eval=[{test}]",
             f"--data.init_args.batch_size={batch}", f"--data.init_args.eval_batch_size={batch}",
             "--trainer.max_epochs=1", f"--trainer.default_root_dir={root / 'runs'}", *extra)



@pytest.mark.slow
def test_classification_exports_the_adapted_network_and_tents_batch_statistics(adapted, tmp_path):
    """SHOT's adapted network, and Tent's, whose BatchNorm normalises each batch with its own statistics."""
    parities = exported_everything(adapted / "runs" / "shot" / "version_0", "classification", ("logits",),
                                   "sfda.methods.shot.SHOT")
    assert parities["onnx"]["smaller_batch"] is not None  # any batch size: checked on a smaller batch too
    tent = adapted / "tent.yaml"
    recipe = yaml.safe_load((adapted / "shot.yaml").read_text())
    recipe["model"] = {"class_path": "sfda.methods.Tent", "init_args": {"source": recipe["model"]["init_args"]
                                                                       ["source"]}}
    tent.write_text(yaml.safe_dump(recipe))
    run_sfda("fit", "--config", str(tent), f"--trainer.default_root_dir={adapted / 'runs' / 'tent'}",
             cwd=adapted)
    run = adapted / "runs" / "tent" / "version_0"
    exported_everything(run, "classification", ("logits",), "sfda.methods.tent.Tent", ("onnx", "torchscript"))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.endswith("running_mean") for k in state)  # the exports kept batch statistics
    code, text = export(str(run), "--format", "safetensors")  # weights alone would lose them: refused
    assert code == 1 and "normalises with each batch's own statistics (Tent)" in text
    assert not (run / "export" / "safetensors").exists()


@pytest.mark.slow
def test_detection_exports_the_teacher_with_torchvisions_post_processing(tmp_path):
    inputs = detection_inputs(tmp_path)
    fit_one_epoch("recipes/detection/digits_photos/lpld.yaml", tmp_path, inputs["artifact"], inputs["photo"],
                  inputs["photo_test"], 4, "--data.init_args.train_subset=null")
    parities = exported_everything(tmp_path / "runs" / "version_0", "detection",
                                   ("boxes", "labels", "scores"), "sfda.methods.lpld.LPLD")
    assert parities["onnx"]["inputs"][0] == 4  # four target images, each run alone (one image per call)


@pytest.mark.slow
def test_pose_exports_the_intermediate_network(tmp_path):
    inputs = pose_inputs(tmp_path)
    fit_one_epoch("recipes/pose/figures/pose_sfda.yaml", tmp_path, inputs["artifact"], inputs["photo"],
                  inputs["test"], 8)
    run = tmp_path / "runs" / "version_0"
    exported_everything(run, "pose", ("heatmaps",), "sfda.methods.pose_sfda.PoseSFDA")
    spec = json.loads((run / "export" / "onnx" / "preprocessing.json").read_text())
    assert len(spec["joint_names"]) == 16 and "class_names" not in spec


@pytest.mark.slow
def test_segmentation_exports_the_network_on_its_inference_windows(colin_source, tmp_path):
    run_sfda("fit", "--config", str(SEGMENTATION_RECIPES / "adabn.yaml"),
             f"--model.init_args.source={colin_source}", "--trainer.max_epochs=1",
             f"--trainer.default_root_dir={tmp_path / 'runs'}")
    parities = exported_everything(tmp_path / "runs" / "version_0", "segmentation", ("logits",),
                                   "sfda.methods.adabn.AdaBN")
    assert parities["onnx"]["inputs"][1:] == [1, 128, 128]  # slices of the 2-D recipes' roi


# --- the exporter's own failures, on a run loaded by a stand-in (no fit needed) ---------------------------
class TinyNet(torch.nn.Module):
    """``custom``: the feature is centred on its median (``kthvalue``), an operator TorchScript traces and
    the ONNX exporter (opset 17) has no translation for."""

    def __init__(self, custom: bool = False):
        super().__init__()
        self.custom = custom
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6))
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        features = self.body(x)
        if self.custom:
            features = features - features.kthvalue(3, dim=1, keepdim=True).values
        return self.head(features.relu())


def stand_in_loader(custom: bool):
    """A ``load_run`` giving a classification method over ``TinyNet`` and a datamodule of 4 images."""
    from types import SimpleNamespace

    from sfda.data.transforms import InputSpec
    from sfda.models import FeatureClassifier
    from sfda.tasks.classification import ClassificationTask

    task = ClassificationTask(["a", "b", "c"], InputSpec(size=8, channels=3))
    network = FeatureClassifier(TinyNet(custom), "body", "head")
    method = SimpleNamespace(task=task, evaluated_network=lambda: network)
    data = SimpleNamespace(predict_dataloader=lambda: [{"image": torch.randn(4, 3, 8, 8)}])
    return lambda config, checkpoint, scratch: (method, data)


@pytest.fixture()
def run_folder(run_without_checkpoint):
    (run_without_checkpoint / "checkpoints").mkdir()
    (run_without_checkpoint / "checkpoints" / "last.ckpt").write_bytes(b"stand-in")
    return run_without_checkpoint


def test_a_network_the_onnx_exporter_cannot_write_is_refused_naming_the_formats_that_can(run_folder):
    from sfda.export import export as export_run
    from sfda.export.formats import ExportError

    with pytest.raises(ExportError) as refused:
        export_run(run_folder, None, "onnx", None, stand_in_loader(custom=True))
    message = str(refused.value)
    assert "--format onnx: the classification network ClassifierLogits could not be exported" in message
    assert "the other formats may still work: torchscript, safetensors" in message
    assert not (run_folder / "export").exists() or not any((run_folder / "export").iterdir())
    folder, parity = export_run(run_folder, None, "torchscript", None, stand_in_loader(custom=True))
    assert parity["passed"] and (folder / "model.torchscript.pt").is_file()


def test_an_export_whose_outputs_drift_beyond_the_tolerance_fails_and_leaves_nothing(run_folder, monkeypatch):
    from sfda.export import export as export_run
    from sfda.export import formats
    from sfda.export.formats import ExportError

    honest = formats.run_written
    monkeypatch.setattr(formats, "run_written", lambda *a: tuple(o + 1e-2 for o in honest(*a)))
    with pytest.raises(ExportError, match="differ from PyTorch's beyond the tolerance 0.0001"):
        export_run(run_folder, None, "torchscript", None, stand_in_loader(custom=False))
    assert sorted(p.name for p in (run_folder / "export").iterdir()) == []  # no model, no staging folder
