"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from kits.bad_input import (
    assert_refused,
    digit_workspace,
    folder_data,
    recipe,
)

SHOT = "sfda.methods.SHOT"


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


def test_a_misspelt_recipe_key_is_refused_by_name(workspace):
    assert_refused(
        ["fit", "--config", shot_recipe(workspace), "--model.init_args.betta=0.3"],
        workspace,
        "betta",
        status=2,
    )
