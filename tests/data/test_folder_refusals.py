"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import numpy as np
import yaml
from kits.bad_input import (
    SOURCE_INPUT,
    assert_refused,
    digit_images,
    folder_data,
    recipe,
    shot_recipe,
    source_artifact,
)
from PIL import Image

from sfda.models import load_artifact


def source_recipe(root, **model_args):
    model = {"class_path": "sfda.methods.SourceTraining", "init_args": {"bottleneck_dim": 16, **model_args}}
    data = folder_data(root / "target", role="source", input=SOURCE_INPUT)
    return str(recipe(root / "source_train.yaml", model, data))


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


def test_an_empty_image_folder_names_the_folder(workspace):
    (workspace / "empty").mkdir()
    data = folder_data(workspace / "empty")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, data=data)], workspace, "data.train", "no images"
    )


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
