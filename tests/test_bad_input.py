"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from bad_input_kit import (
    ARCHITECTURE,
    assert_refused,
    digit_images,
    digit_workspace,
    folder_data,
    recipe,
    sfda,
    snapshot,
    source_artifact,
)
from PIL import Image

from sfda.models import load_artifact

SHOT = "sfda.methods.SHOT"
SOURCE_INPUT = {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    """A user's folder (also the cwd) with a 10-class target image folder and a source artifact."""
    return digit_workspace(tmp_path, monkeypatch)


def shot_recipe(root, source="source.pt", data=None, **model_args):
    model = {
        "class_path": SHOT,
        "init_args": {
            "source": str(root / source) if isinstance(source, str) else source,
            "beta": 0.1,
            **model_args,
        },
    }
    return str(recipe(root / "shot.yaml", model, data or folder_data(root / "target")))


def source_recipe(root, **model_args):
    model = {"class_path": "sfda.methods.SourceTraining", "init_args": {"bottleneck_dim": 16, **model_args}}
    data = folder_data(root / "target", role="source", input=SOURCE_INPUT)
    return str(recipe(root / "source_train.yaml", model, data))


def crafted_artifact(root, target: str, kwargs: dict | None = None):
    """source.pt with its architecture replaced by ``target`` (what a hostile party could hand over)."""
    payload = torch.load(root / "source.pt", weights_only=True)
    payload["architecture"] = {"target": target, "kwargs": kwargs or {}}
    torch.save(payload, root / "crafted.pt")
    return root / "crafted.pt"


# --- 1. a source artifact is data: it never chooses code to run ----
def test_artifact_naming_os_system_is_refused_and_runs_nothing(workspace):
    marker = workspace / "pwned"
    crafted_artifact(workspace, "os:system", {"command": f"touch {marker}"})
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, "crafted.pt")],
        workspace,
        "crafted.pt",
        "'os:system'",
        "sfda does not build",
    )
    assert not marker.exists()


def test_artifact_naming_a_model_file_is_refused_before_the_file_is_imported(workspace):
    marker = workspace / "imported"
    (workspace / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net:\n    pass\n")
    crafted_artifact(workspace, f"{workspace}/evil.py:Net")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, "crafted.pt")],
        workspace,
        "evil.py:Net",
        "model.init_args.source: {path:",
    )
    assert not marker.exists()


def test_a_text_file_handed_over_as_an_artifact_is_not_read_as_a_recipe(workspace):
    marker = workspace / "pwned"
    (workspace / "source.pt").write_text(
        f"architecture: 'os:system'\nweights: w.pt\nfeature_layer: a\nhead_layer: b\n"
        f"class_names: [a]\ninput: {{size: 8}}\nkwargs: {{command: touch {marker}}}\n"
    )
    assert_refused(
        ["fit", "--config", shot_recipe(workspace)], workspace, "source.pt", "not a readable source artifact"
    )
    assert not marker.exists()


def test_trusted_architecture_must_be_the_one_the_artifact_names(workspace):
    crafted_artifact(workspace, "my_models.py:Other")
    trusted = {"path": str(workspace / "crafted.pt"), "architecture": "my_models.py:Net"}
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, trusted)],
        workspace,
        "'my_models.py:Other'",
        "model.source.architecture = 'my_models.py:Net'",
        "same class",
    )


def test_an_external_class_the_recipe_trusts_is_found_in_the_working_directory(workspace):
    (workspace / "my_models.py").write_text("from sfda.models.classifier import SourceClassifier as Net\n")
    payload = torch.load(workspace / "source.pt", weights_only=True)
    # a module name, not importable: found as my_models.py in the cwd
    payload["architecture"]["target"] = "my_models:Net"
    torch.save(payload, workspace / "external.pt")
    artifact = load_artifact(workspace / "external.pt", trusted_architecture="my_models:Net")
    assert artifact.build().head.out_features == 10


def test_a_missing_model_file_says_where_it_looked(workspace):
    crafted_artifact(workspace, "nowhere.py:Net")
    trusted = {"path": str(workspace / "crafted.pt"), "architecture": "nowhere.py:Net"}
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, trusted)],
        workspace,
        "model file 'nowhere.py' not found; looked in",
        str(workspace / "nowhere.py"),
    )


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("missing", "model.source: "),
        ("text", "not a readable source artifact"),
        ("plain_state_dict", "not an sfda source artifact"),
        ("no_class_names", "field 'class_names' must be a list"),
        ("nan_weights", "non-finite weights"),
        ("bad_input_spec", "field 'input' is not a valid input spec"),
    ],
)
def test_broken_artifacts_are_refused_naming_the_file(workspace, damage, needle):
    path = workspace / "broken.pt"
    payload = torch.load(workspace / "source.pt", weights_only=True)
    if damage == "text":
        path.write_text("this is not a model\n")
    elif damage == "plain_state_dict":
        torch.save(payload["state_dict"], path)
    elif damage == "no_class_names":
        torch.save({k: v for k, v in payload.items() if k != "class_names"}, path)
    elif damage == "nan_weights":
        next(v for v in payload["state_dict"].values() if v.is_floating_point()).fill_(float("nan"))
        torch.save(payload, path)
    elif damage == "bad_input_spec":
        torch.save({**payload, "input": {"size": 28, "channels": 5}}, path)
    text = assert_refused(["fit", "--config", shot_recipe(workspace, "broken.pt")], workspace, needle)
    assert "broken.pt" in text


def test_input_channels_that_the_network_cannot_take_are_refused_at_load(workspace):
    torch.save(torch.load(workspace / "source.pt", weights_only=True)["state_dict"], workspace / "weights.pt")
    external = {
        "architecture": ARCHITECTURE,
        "weights": str(workspace / "weights.pt"),
        "feature_layer": "bottleneck",
        "head_layer": "head",
        "class_names": [str(i) for i in range(10)],
        "input": {"size": 28, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3},
        "kwargs": {
            "backbone": "lenet",
            "num_classes": 10,
            "in_channels": 1,
            "input_size": 28,
            "bottleneck_dim": 16,
        },
    }
    assert_refused(["fit", "--config", shot_recipe(workspace, external)], workspace, "input.channels = 3")


def test_a_class_count_that_differs_from_the_data_names_both(workspace):
    source_artifact(workspace / "six.pt", [str(i) for i in range(6)])
    data = folder_data(workspace / "target", class_names=[str(i) for i in range(10)])
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, "six.pt", data)], workspace, "6 classes", "10 classes"
    )


# --- 2. no run destroys a model ----
def test_a_smoke_run_never_replaces_a_trained_artifact(workspace):
    trained = workspace / "published" / "source.pt"
    trained.parent.mkdir()
    trained.write_bytes((workspace / "source.pt").read_bytes())
    before = snapshot(workspace)
    for smoke in ("--trainer.fast_dev_run=true", "--trainer.limit_train_batches=1"):
        code, text = sfda("fit", "--config", source_recipe(workspace, artifact=str(trained)), smoke)
        assert code == 0, text[-2000:]
    assert snapshot(workspace)["published/source.pt"] == before["published/source.pt"]
    results = json.loads(next(workspace.glob("runs/source_train/version_*/results.json")).read_text())
    assert "limit_train_batches cut the run short" in results["artifact_copy_skipped"]


def test_an_existing_artifact_path_is_refused_before_training(workspace):
    text = assert_refused(
        ["fit", "--config", source_recipe(workspace, artifact=str(workspace / "source.pt"))],
        workspace,
        "model.artifact",
        "already exists",
        "overwrite_artifact=true",
    )
    assert "Epoch" not in text


def test_an_unwritable_artifact_path_is_refused_before_training(workspace):
    (workspace / "a_file").write_text("x")
    assert_refused(
        ["fit", "--config", source_recipe(workspace, artifact=str(workspace / "a_file" / "source.pt"))],
        workspace,
        "model.artifact",
        "not a writable folder",
    )


def test_a_complete_source_run_writes_its_own_artifact_and_the_copy(workspace):
    code, text = sfda(
        "fit", "--config", source_recipe(workspace, artifact=str(workspace / "new" / "source.pt"))
    )
    assert code == 0, text[-2000:]
    own = workspace / "runs/source_train/version_0/source.pt"
    assert own.read_bytes() == (workspace / "new/source.pt").read_bytes()
    assert load_artifact(own).num_classes == 10


# --- 3. image folders take the model's class order ----
def test_class_folders_are_labelled_by_the_models_class_names(workspace):
    from sfda.data import ImageFolderDataModule
    from sfda.tasks.base import check_against_data

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
    digit_images(workspace / "words", names, per_class=1)
    (workspace / "words" / ".ipynb_checkpoints").mkdir()
    (workspace / "words" / ".DS_Store").write_bytes(b"\0")
    source_artifact(workspace / "words.pt", names)
    dm = ImageFolderDataModule(str(workspace / "words"))
    dm.setup()  # Lightning sets the datamodule up before the module checks it
    check_against_data(load_artifact(workspace / "words.pt"), dm)
    dm.setup()
    paths, labels = dm.splits["train"]
    assert [names[label] for label in labels.reveal(range(len(paths)))] == [p.parent.name for p in paths]
    assert dm.class_names == names


def test_numeric_class_folders_sort_by_number_without_a_model(workspace):
    from sfda.data import ImageFolderDataModule

    digit_images(workspace / "numbers", [str(i) for i in range(12)], per_class=1)
    dm = ImageFolderDataModule(str(workspace / "numbers"), role="source")
    dm.setup()
    assert dm.class_names == [str(i) for i in range(12)]


def test_a_folder_that_is_not_a_class_of_the_model_is_refused_showing_both_lists(workspace):
    digit_images(workspace / "target", ["cat"], per_class=1)
    assert_refused(["fit", "--config", shot_recipe(workspace)], workspace, "['cat']", "class_names ['0', '1'")


def test_sixteen_bit_images_are_read_on_their_true_range(workspace):
    from sfda.data.datasets import ImageDataset
    from sfda.data.transforms import InputSpec

    Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(workspace / "grey16.png")
    Image.fromarray(np.full((8, 8), 127, np.uint8)).save(workspace / "grey8.png")
    dataset = ImageDataset(
        [workspace / "grey16.png", workspace / "grey8.png"], None, InputSpec(8, 1, (0.0,), (1.0,))
    )
    assert Image.open(workspace / "grey16.png").mode.startswith("I;16")
    assert torch.allclose(dataset[0]["image"], dataset[1]["image"], atol=1 / 255)


def test_a_corrupt_image_names_the_file(workspace):
    (workspace / "target" / "3" / "broken.png").write_bytes(b"not a png")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace)], workspace, "broken.png", "corrupt or unreadable"
    )


def test_an_empty_image_folder_names_the_folder(workspace):
    (workspace / "empty").mkdir()
    data = folder_data(workspace / "empty")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, data=data)], workspace, "data.train", "no images"
    )


# --- 4. checkpoints: last resumes, others are checked ----
@pytest.fixture()
def adapted(workspace):
    """The workspace after one real SHOT epoch: runs/shot/version_0/checkpoints/last.ckpt."""
    code, text = sfda("fit", "--config", shot_recipe(workspace))
    assert code == 0, text[-2000:]
    return workspace


def test_ckpt_path_last_resumes_the_newest_run_of_the_recipe(adapted, caplog):
    with caplog.at_level("INFO"):
        code, text = sfda(
            "fit", "--config", shot_recipe(adapted), "--ckpt_path", "last", "--trainer.max_epochs=2"
        )
    assert code == 0, text[-2000:]
    assert (
        "Restored all states from the checkpoint at runs/shot/version_0/checkpoints/last.ckpt" in caplog.text
    )
    assert json.loads((adapted / "runs/shot/version_1/results.json").read_text())["epochs"] == 2


def test_ckpt_path_last_without_a_run_says_where_it_looked(workspace):
    assert_refused(
        ["fit", "--config", shot_recipe(workspace), "--ckpt_path", "last"],
        workspace,
        "--ckpt_path last: no checkpoints/last.ckpt under runs/shot",
    )


def test_a_checkpoint_of_another_method_is_refused(adapted):
    tent = recipe(
        adapted / "tent.yaml",
        {"class_path": "sfda.methods.Tent", "init_args": {"source": str(adapted / "source.pt")}},
        folder_data(adapted / "target"),
    )
    assert_refused(
        ["test", "--config", str(tent), "--ckpt_path", "runs/shot/version_0/checkpoints/last.ckpt"],
        adapted,
        "written by sfda.methods.shot.SHOT",
        "sfda.methods.tent.Tent",
    )


def test_a_file_that_is_not_a_checkpoint_is_refused(workspace):
    (workspace / "notes.ckpt").write_text("hello")
    assert_refused(
        ["test", "--config", shot_recipe(workspace), "--ckpt_path", "notes.ckpt"],
        workspace,
        "notes.ckpt is not a readable checkpoint",
    )


def test_testing_an_adaptation_recipe_without_a_checkpoint_is_refused(workspace):
    assert_refused(
        ["test", "--config", shot_recipe(workspace)], workspace, "without --ckpt_path", "source_only"
    )


def test_test_predict_and_resume_refuse_a_checkpoint_with_non_finite_weights(adapted):
    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    key = next(k for k in checkpoint["state_dict"] if k.endswith("running_var"))
    checkpoint["state_dict"][key].fill_(float("inf"))
    torch.save(checkpoint, adapted / "inf.ckpt")
    for subcommand in ("test", "predict", "fit"):
        text = assert_refused(
            [subcommand, "--config", shot_recipe(adapted), "--ckpt_path", "inf.ckpt"],
            adapted,
            "non-finite weights",
            "running_var",
        )
        assert "inf.ckpt" in text


def test_non_finite_weights_stop_a_run_and_keep_the_last_finite_checkpoint(adapted):
    last = adapted / "runs/shot/version_0/checkpoints/last.ckpt"
    kept = last.read_bytes()
    code, text = sfda(
        "fit",
        "--config",
        shot_recipe(adapted),
        "--ckpt_path",
        str(last),
        "--trainer.max_epochs=3",
        "--trainer.callbacks+=faults.InfRunningVarAtEpoch",
        "--trainer.callbacks.epoch=2",
        "--trainer.default_root_dir=runs/shot",
    )
    assert code == 1 and "non-finite weights in epoch 3/3" in text and "running_var" in text
    assert last.read_bytes() == kept
    resumed = adapted / "runs/shot/version_1/checkpoints/last.ckpt"
    assert torch.load(resumed, weights_only=True)["epoch"] == 1  # epoch 2's weights were never written
    results = adapted / "runs/shot/version_1/results.json"
    assert not results.exists() or json.loads(results.read_text())  # valid JSON if written


# --- 5. trainer, optimiser and data values ----
@pytest.mark.parametrize(
    "override, needle",
    [
        ("--model.init_args.optim.lr=-0.01", "model.optim.lr: expected > 0"),
        ("--model.init_args.optim.momentum=1.5", "model.optim.momentum: expected in [0, 1)"),
        ("--data.init_args.batch_size=0", "data.batch_size: expected an integer >= 1"),
        ("--data.init_args.eval_batch_size=-4", "data.eval_batch_size: expected an integer >= 1"),
        ("--data.init_args.eval_subset=0", "data.eval_subset: expected an integer >= 1"),
        ("--data.init_args.train_subset=0", "data.train_subset: expected an integer >= 1"),
        ("--trainer.max_epochs=-2", "trainer.max_epochs: expected -1"),
        ("--trainer.max_epochs=0", "trainer.max_epochs: 0 means the run does no training step"),
        ("--trainer.max_steps=0", "trainer.max_steps: 0 means"),
        ("--trainer.limit_train_batches=0", "trainer.limit_train_batches: 0 means"),
        ("--data.init_args.batch_size=1000", "data.batch_size: 1000 is larger than the 40 training samples"),
    ],
)
def test_values_that_cannot_work_are_refused_by_field(workspace, override, needle):
    assert_refused(["fit", "--config", shot_recipe(workspace), override], workspace, needle)


def test_a_misspelt_recipe_key_is_refused_by_name(workspace):
    assert_refused(
        ["fit", "--config", shot_recipe(workspace), "--model.init_args.betta=0.3"],
        workspace,
        "betta",
        status=2,
    )


def test_a_missing_recipe_file_is_named(workspace):
    assert_refused(["fit", "--config", str(workspace / "nope.yaml")], workspace, "nope.yaml", status=2)


# --- 6. datalists, volumes, class splits, labels files, results ----
def nifti(path, data):
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path.name


def test_a_volume_with_nan_voxels_names_the_file(workspace):
    from sfda.data.volumes import DatalistError, VolumeSpec, load_volume

    data = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    data[3, 4, 5] = np.nan
    nifti(workspace / "case.nii.gz", data)
    spec = VolumeSpec(mode="2d", roi=(16, 16), spacing=(1.0, 1.0, 1.0))
    refused = r"case.nii.gz: the image has 1 NaN or infinite voxels \(of 2048\)"
    with pytest.raises(DatalistError, match=refused):
        load_volume({"id": "case", "image": workspace / "case.nii.gz"}, spec, 2)


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "data.datalist"),
        ("{not json", "not a readable JSON datalist"),
        ({"training": [{"label": "x.nii.gz"}]}, "has no 'image' field"),
        ({"training": [{"image": "missing.nii.gz"}]}, "missing.nii.gz: file not found"),
        ({"validation": []}, "no entries under 'training'"),
    ],
)
def test_bad_datalists_are_refused_naming_the_file_and_field(workspace, content, needle):
    from sfda.data.volumes import DatalistError, read_datalist

    path = workspace / "datalist.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DatalistError, match=needle):
        read_datalist(path, "training")


def test_overlapping_class_split_lists_are_refused(workspace):
    from sfda.data.class_split import ClassSplit, ClassSplitError

    with pytest.raises(ClassSplitError, match="split"):
        ClassSplit(shared=[0, 1, 2], source_private=[2, 3])


def labels_file(workspace, text: str, encoding="utf-8"):
    from sfda.active.annotators import read_labels_file

    path = workspace / "labels.csv"
    path.write_bytes(text.encode(encoding))
    before = path.read_bytes()
    try:
        return read_labels_file(path, {4: "a.png", 9: "b.png"}, ["cat", "dog"])
    finally:
        assert path.read_bytes() == before


def test_a_spreadsheet_labels_file_with_bom_and_crlf_is_read(workspace):
    assert labels_file(workspace, "index,label\r\n4,dog\r\n9,0\r\n", encoding="utf-8-sig") == {4: 1, 9: 0}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("index,label\n4,horse\n", "labels.csv:2: label 'horse'"),
        ("index,label\n4,dog\n4,cat\n", "labels.csv:3: sample 4 is labelled twice"),
        ("index,label\n5,dog\n", "labels.csv:2: index '5' was not queried"),
        ("idx,lab\n4,dog\n", "labels.csv:1: expected the header"),
    ],
)
def test_bad_labels_files_name_the_line(workspace, text, needle):
    from sfda.active.annotators import LabelsFileError

    with pytest.raises(LabelsFileError, match=needle):
        labels_file(workspace, text)


def test_results_json_stays_valid_json_with_a_nan_metric(workspace):
    from sfda.run.folder import json_safe

    text = json.dumps(json_safe({"target/acc": float("nan"), "round": [1.0, float("inf")]}), allow_nan=False)
    assert json.loads(text) == {"target/acc": None, "round": [1.0, None]}


def test_a_failed_run_leaves_no_empty_run_folder(workspace):
    digit_images(workspace / "target", ["cat"], per_class=1)  # refused in setup, after the trainer exists
    sfda("fit", "--config", shot_recipe(workspace))
    assert not list(workspace.glob("runs/shot/version_*"))


# --- 7. files a checkpoint or datalist names, and runs without a folder of their own ----
def test_paths_saved_in_a_checkpoint_never_delete_anything(adapted):
    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    key = next(k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint"))
    checkpoint["callbacks"][key]["best_model_path"] = "runs/shot/version_1/checkpoints/../../../../my_labels"
    torch.save(checkpoint, adapted / "handed_over.ckpt")
    (adapted / "my_labels").mkdir()
    (adapted / "my_labels" / "labels.csv").write_text("index,label\n1,2\n")
    code, text = sfda(
        "fit", "--config", shot_recipe(adapted), "--ckpt_path", "handed_over.ckpt", "--trainer.max_epochs=2"
    )
    assert code == 0, text[-2000:]
    assert (adapted / "my_labels" / "labels.csv").read_text() == "index,label\n1,2\n"


def test_scores_stored_in_a_checkpoint_never_replace_what_test_measures(adapted):
    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    checkpoint["sfda_results"]["target/acc"] = 0.999
    torch.save(checkpoint, adapted / "claims.ckpt")
    code, text = sfda("test", "--config", shot_recipe(adapted), "--ckpt_path", "claims.ckpt")
    assert code == 0, text[-2000:]
    results = json.loads(sorted(adapted.glob("runs/shot/version_*/results.json"))[-1].read_text())
    assert results["target/acc"] != 0.999 and "source_only/acc" not in results


def test_a_checkpoint_of_another_target_set_names_the_shapes(adapted):
    digit_images(adapted / "target", ["0"], per_class=8)  # 4 more images than when it was adapted
    assert_refused(
        ["fit", "--config", shot_recipe(adapted), "--ckpt_path", "last", "--trainer.max_epochs=2"],
        adapted,
        "does not fit this recipe",
        "pseudo_labels: (40,) in the checkpoint, (44,) for this recipe",
    )


def test_ckpt_path_best_is_refused_by_name(workspace):
    assert_refused(
        ["test", "--config", shot_recipe(workspace), "--ckpt_path", "best"],
        workspace,
        "--ckpt_path best",
        "expected 'last'",
    )


def test_a_run_without_a_folder_of_its_own_is_refused_or_writes_nothing(workspace):
    assert_refused(
        ["fit", "--config", shot_recipe(workspace), "--trainer.logger=false"], workspace, "trainer.logger"
    )
    for _ in range(2):  # fast_dev_run has no version folder: it writes no config, results or predictions
        code, text = sfda("fit", "--config", shot_recipe(workspace), "--trainer.fast_dev_run=true")
        assert code == 0, text[-2000:]
    assert not list(workspace.glob("runs/shot/*.json")) and not list(workspace.glob("runs/shot/*.yaml"))


def test_class_names_in_another_order_than_the_models_are_refused(workspace):
    data = folder_data(workspace / "target", class_names=[str(i) for i in reversed(range(10))])
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, data=data)], workspace, "another order", "permuted"
    )


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("int_names", "field 'class_names' must be distinct strings"),
        ("bad_kwargs", "architecture.kwargs"),
    ],
)
def test_artifact_fields_that_cannot_build_the_model_are_named(workspace, damage, needle):
    payload = torch.load(workspace / "source.pt", weights_only=True)
    if damage == "int_names":
        payload["class_names"] = list(range(10))
    else:
        payload["architecture"]["kwargs"]["dropout"] = 0.5
    torch.save(payload, workspace / "odd.pt")
    assert_refused(["fit", "--config", shot_recipe(workspace, "odd.pt")], workspace, needle, "odd.pt")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("--data.init_args.input.size=0", "input.size: expected a positive integer"),
        ("--data.init_args.input.std=[0.0]", "input.std: expected positive values"),
    ],
)
def test_source_input_specs_that_cannot_work_are_refused(workspace, override, needle):
    assert_refused(["fit", "--config", source_recipe(workspace), override], workspace, needle)


def test_source_training_on_an_unlabelled_folder_is_refused(workspace):
    flat = workspace / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(flat / f"{i}.png")
    config = yaml.safe_load(open(source_recipe(workspace)))
    config["data"]["init_args"]["train"] = str(flat)
    (workspace / "flat.yaml").write_text(yaml.safe_dump(config))
    assert_refused(
        ["fit", "--config", str(workspace / "flat.yaml")], workspace, "data.train", "needs labelled images"
    )


def test_a_decompression_bomb_image_names_the_file(workspace):
    Image.new("1", (14000, 14000)).save(workspace / "target" / "5" / "huge.png")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace)], workspace, "huge.png", "too large to decode safely"
    )


@pytest.mark.parametrize(
    "method, args, needle",
    [
        (SHOT, {"beta": -1.0}, "model.beta: expected a value >= 0"),
        (SHOT, {"rounds": 0}, "model.rounds"),
        ("sfda.methods.NRC", {"kk": 100}, "model.kk: expected a neighbour count in [1, 39]"),
    ],
)
def test_method_values_that_cannot_work_are_refused(workspace, method, args, needle):
    model = {"class_path": method, "init_args": {"source": str(workspace / "source.pt"), **args}}
    path = recipe(workspace / "method.yaml", model, folder_data(workspace / "target"))
    assert_refused(["fit", "--config", str(path)], workspace, needle)


@pytest.mark.parametrize("method", ["NRC", "AaD", "GLC"])
def test_a_faiss_knn_backend_without_faiss_is_refused_with_the_fix(workspace, monkeypatch, method):
    import sfda.pseudo_labels.knn as knn

    monkeypatch.setattr(knn, "faiss_available", lambda: False)
    model = {"class_path": f"sfda.methods.{method}",
             "init_args": {"source": str(workspace / "source.pt"), "knn_backend": "faiss"}}
    path = recipe(workspace / "method.yaml", model, folder_data(workspace / "target"))
    assert_refused(["fit", "--config", str(path)], workspace, "model.init_args.knn_backend",
                   "pip install -e '.[faiss]'")


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"image": "case.nii.gz", "id": "../../results/clinical_mask"}, "id = '../../results/clinical_mask'"),
        ({"image": "case.npy"}, "expected .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM series folder"),
    ],
)
def test_datalist_entries_cannot_choose_where_masks_go_or_which_reader_runs(workspace, entry, needle):
    from sfda.data.volumes import DatalistError, read_datalist

    nifti(workspace / "case.nii.gz", np.zeros((4, 4, 4), np.float32))
    np.save(workspace / "case.npy", np.zeros((4, 4, 4), np.float32))
    (workspace / "datalist.json").write_text(json.dumps({"training": [entry]}))
    with pytest.raises(DatalistError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        read_datalist(workspace / "datalist.json", "training")


def test_a_stale_labels_file_of_another_query_is_refused(workspace):
    from sfda.active import FileAnnotator, LabelsFileError
    from sfda.data import ImageFolderDataModule

    data = ImageFolderDataModule(str(workspace / "target"), class_names=[str(i) for i in range(10)])
    data.setup()
    annotator = FileAnnotator(str(workspace / "annotations"))
    with pytest.raises(SystemExit):  # round 1 asks for labels: to_label.csv is written for an image folder
        annotator.annotate(1, np.array([0, 1]), data, workspace, True)
    (workspace / "annotations/round_01/labels.csv").write_text("index,label\n0,0\n1,0\n")
    assert annotator.annotate(1, np.array([0, 1]), data, workspace, True).tolist() == [0, 0]
    before = snapshot(workspace / "annotations")
    with pytest.raises(LabelsFileError, match="written for another query"):
        annotator.annotate(1, np.array([5, 6]), data, workspace, True)
    assert snapshot(workspace / "annotations") == before


def test_a_datamodule_without_the_data_contract_is_refused_by_member():
    from sfda.data.contract import check_target_data
    from sfda.data.datamodules import DigitsDataModule

    check_target_data(DigitsDataModule("optdigits"))

    class Bare:
        class_names, input_spec = ["a", "b"], None

        def num_samples(self, split="train"):
            return 2

    with pytest.raises(
        ValueError, match=r"Bare lacks \['train_dataloader', 'val_dataloader', 'bank_dataloader'\]"
    ):
        check_target_data(Bare())


def test_checkpoints_and_hparams_hold_the_methods_arguments_as_plain_data(adapted):
    import yaml as pyyaml

    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (
        checkpoint["hyper_parameters"]["beta"] == 0.1
        and checkpoint["sfda"]["method"] == "sfda.methods.shot.SHOT"
    )
    assert pyyaml.safe_load((adapted / "runs/shot/version_0/hparams.yaml").read_text())["beta"] == 0.1


def test_plain_turns_objects_into_data():
    from sfda.tasks.hparams import plain
    from sfda.tasks.optim import Optim

    assert plain({"optim": Optim(lr=0.5), "dims": (1, 2), "other": object()}) == {
        "optim": {**Optim().__dict__, "lr": 0.5, "milestones": []},  # tuples become lists
        "dims": [1, 2],
        "other": "builtins.object",
    }


# --- detection: boxes, labels, images and artifacts of the wrong task, through the CLI ----
def detection_recipe(root, boxes_csv: Path, source: Path) -> str:
    model = {"class_path": "sfda.methods.LPLD", "init_args": {"source": str(source)}}
    data = {
        "class_path": "sfda.data.DetectionDataModule",
        "init_args": {"train": [str(boxes_csv)], "role": "target", "batch_size": 1, "eval_batch_size": 1},
    }
    return str(recipe(root / "lpld.yaml", model, data))


@pytest.mark.parametrize(
    "row, needles",
    [
        ("a.png,10,5,90,25,0", ["boxes.csv: image 'a.png', box 0", "outside the image of 64x48 pixels"]),
        (
            "a.png,30,5,30,25,0",
            ["boxes.csv: image 'a.png', box 0", "field 'xmax' must be greater than 'xmin'"],
        ),
        (
            "a.png,10,5,30,25,cat",
            ["boxes.csv: image 'a.png', box 0", "field 'label' = 'cat' is not one of class_names"],
        ),
        ("gone.png,10,5,30,25,0", ["boxes.csv: names image", "gone.png', which does not exist"]),
    ],
)
def test_a_bad_box_file_is_refused_through_the_cli_naming_file_and_field(tmp_path, monkeypatch, row, needles):
    from detection_kit import detection_artifact

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_text(f"image_path,xmin,ymin,xmax,ymax,label\n{row}\n")
    artifact = detection_artifact(tmp_path / "detector.pt")
    assert_refused(
        ["fit", "--config", detection_recipe(tmp_path, tmp_path / "boxes.csv", artifact)], tmp_path, *needles
    )


def test_a_classification_artifact_in_a_detection_recipe_is_refused_by_the_cli(workspace):
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(workspace / "a.png")
    (workspace / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\na.png,1,1,9,9,0\n")
    assert_refused(
        ["fit", "--config", detection_recipe(workspace, workspace / "boxes.csv", workspace / "source.pt")],
        workspace,
        "source.pt is a 'classification' artifact; LPLD adapts detection models only",
    )


def test_a_detection_artifact_in_a_classification_recipe_is_refused_by_the_cli(workspace):
    from detection_kit import detection_artifact

    detection_artifact(workspace / "detector.pt")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, source="detector.pt")],
        workspace,
        "detector.pt is a 'detection' artifact; SHOT adapts classification models only",
        "SHOT adapts classification models only",
    )


def test_source_training_without_an_input_spec_is_refused_naming_the_field(workspace):
    model = {"class_path": "sfda.methods.SourceTraining", "init_args": {"bottleneck_dim": 16}}
    path = str(recipe(workspace / "no_input.yaml", model, folder_data(workspace / "target", role="source")))
    assert_refused(["fit", "--config", path], workspace,
                   "data.input: source training needs the input spec (size, channels, mean, std)")
