"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import pytest
from conftest import ROOT, run_sfda
from kits.bad_input import (
    digit_images,
    sfda,
    shot_recipe,
)


def test_a_failed_run_leaves_no_empty_run_folder(workspace):
    digit_images(workspace / "target", ["cat"], per_class=1)  # refused in setup, after the trainer exists
    sfda("fit", "--config", shot_recipe(workspace))
    assert not list(workspace.glob("runs/shot/version_*"))


@pytest.mark.slow  # a CLI subprocess run
def test_print_config_resolves_the_recipe():
    done = run_sfda("fit", "--config", str(ROOT / "recipes/digits/svhn_mnist/shot.yaml"), "--print_config")
    assert "class_path: sfda.methods.SHOT" in done.stdout and "beta: 0.1" in done.stdout
