"""The sweep tests' fixtures: tiny SHOT recipes with a search space over their learning rate."""

from __future__ import annotations

import pytest
from kits.bad_input import digit_images, folder_data, recipe, source_artifact
from kits.sweep import LR


@pytest.fixture
def workspace(tmp_path):
    """A tiny SHOT recipe (untrained LeNet, 20 folder images) and a space over its learning rate."""
    names = [str(i) for i in range(10)]
    digit_images(tmp_path / "target", names, per_class=2)
    source = source_artifact(tmp_path / "source.pt", names)
    model = {
        "class_path": "sfda.methods.SHOT",
        "init_args": {"source": str(source), "beta": 0.1, "optim": {"name": "sgd", "lr": 0.01}},
    }
    config = recipe(tmp_path / "shot.yaml", model, folder_data(tmp_path / "target"), {"max_epochs": 1})
    space = tmp_path / "space.yaml"
    space.write_text(f"{LR}: {{type: float, low: 1.0e-3, high: 1.0e-1, log: true}}\n")
    return tmp_path, config, space



@pytest.fixture
def tiny(tmp_path):
    """A tiny SHOT recipe (untrained LeNet, 30 folder images) validating every epoch."""
    names = [str(i) for i in range(10)]
    digit_images(tmp_path / "target", names, per_class=3)
    source = source_artifact(tmp_path / "source.pt", names)
    optim = {"name": "sgd", "lr": 0.01}
    model = {
        "class_path": "sfda.methods.SHOT",
        "init_args": {"source": str(source), "beta": 0.1, "optim": optim},
    }
    path = recipe(tmp_path / "shot.yaml", model, folder_data(tmp_path / "target"), {"max_epochs": 2})
    space = tmp_path / "space.yaml"
    space.write_text(
        "model.init_args.optim.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"
        "model.init_args.beta: {type: categorical, choices: [0.1, 0.3]}\n"
    )
    return tmp_path, path, space

