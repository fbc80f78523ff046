"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import pytest
from conftest import ROOT, run_sfda
from kits.bad_input import (
    assert_refused,
    folder_data,
    shot_recipe,
    source_artifact,
)
from PIL import Image


def test_a_class_count_that_differs_from_the_data_names_both(workspace):
    source_artifact(workspace / "six.pt", [str(i) for i in range(6)])
    data = folder_data(workspace / "target", class_names=[str(i) for i in range(10)])
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, "six.pt", data)], workspace, "6 classes", "10 classes"
    )


def test_class_names_in_another_order_than_the_models_are_refused(workspace):
    data = folder_data(workspace / "target", class_names=[str(i) for i in reversed(range(10))])
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, data=data)], workspace, "another order", "permuted"
    )


@pytest.mark.slow  # a CLI subprocess run
def test_class_count_mismatch_names_both_values(mnist_source, tmp_path):
    data = tmp_path / "six"
    for cls in range(6):
        (data / str(cls)).mkdir(parents=True)

        Image.new("L", (28, 28)).save(data / str(cls) / "0.png")
    done = run_sfda("fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/shot.yaml"),
                    f"--model.init_args.source={mnist_source}", "--data=sfda.data.ImageFolderDataModule",
                    f"--data.init_args.train={data}",
                    '--data.init_args.class_names=["0","1","2","3","4","5"]',
                    f"--trainer.default_root_dir={tmp_path / 'run'}", check=False)
    assert done.returncode != 0
    assert "10 classes" in done.stderr and "6 classes" in done.stderr
