"""Tiny real inputs for the bad-input catalogue: image folders, a source artifact, recipes, and a
snapshot that proves a refused run changed none of the user's files."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from sfda.cli import main
from sfda.data.transforms import InputSpec
from sfda.models import SourceClassifier, artifact_from_module

DIGIT_SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))
ARCHITECTURE = "sfda.models.classifier:SourceClassifier"


def digit_images(folder: Path, classes: list[str], per_class: int = 4, seed: int = 0) -> Path:
    """``folder/<class>/<i>.png`` 28x28 grey images (a different brightness pattern per class)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(20 * c, 10, (28, 28)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


def source_artifact(path: Path, class_names: list[str], seed: int = 0) -> Path:
    """A real sfda LeNet source artifact (untrained weights) for ``class_names``."""
    import torch

    torch.manual_seed(seed)
    kwargs = {
        "backbone": "lenet",
        "num_classes": len(class_names),
        "in_channels": 1,
        "input_size": 28,
        "bottleneck_dim": 16,
    }
    network = SourceClassifier(**kwargs)
    architecture = {"target": ARCHITECTURE, "kwargs": kwargs}
    artifact_from_module(network, class_names, DIGIT_SPEC, architecture).save(path)
    return path


def recipe(path: Path, model: dict, data: dict, trainer: dict | None = None) -> Path:
    """Write a recipe YAML (model and data as ``{class_path, init_args}``)."""
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, **(trainer or {})},
        "model": model,
        "data": data,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def folder_data(train: Path, **extra) -> dict:
    return {
        "class_path": "sfda.data.ImageFolderDataModule",
        "init_args": {"train": str(train), "batch_size": 8, "eval_batch_size": 16, **extra},
    }


def sfda(*args: str) -> tuple[int, str]:
    """Run ``sfda <args>`` in-process: (exit status, stderr + stdout)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*args, "--trainer.enable_progress_bar=false"])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return code, err.getvalue() + out.getvalue()


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_refused(args: list[str], root: Path, *needles: str, status: int = 1) -> str:
    """Run sfda; assert the exit status, that the message holds every needle, and that no file under
    ``root`` changed or appeared (no run folder is left behind either)."""
    before = snapshot(root)
    code, text = sfda(*args)
    assert code == status, f"exit {code}, expected {status}:\n{text[-3000:]}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text[-3000:]}"
    assert snapshot(root) == before, "a refused run changed or added files"
    return text


def digit_workspace(tmp_path: Path, monkeypatch) -> Path:
    """A user's folder (also the cwd) with a 10-class target image folder ``target/`` and an untrained
    source artifact ``source.pt`` for those classes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SFDA_RUN_VERSION", raising=False)
    classes = [str(i) for i in range(10)]
    digit_images(tmp_path / "target", classes)
    source_artifact(tmp_path / "source.pt", classes)
    return tmp_path


SHOT = "sfda.methods.SHOT"
SOURCE_INPUT = {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}


def shot_recipe(root: Path, source="source.pt", data: dict | None = None, name: str = "shot.yaml",
                **model_args) -> str:
    """``<root>/<name>``: a SHOT recipe (beta 0.1) adapting ``<root>/<source>`` (a file name under root,
    or any other value written as is) on ``data`` (default: the image folder ``<root>/target``), with
    ``model_args`` added to the method's arguments; its path as a string."""
    model = {
        "class_path": SHOT,
        "init_args": {
            "source": str(root / source) if isinstance(source, str) else source,
            "beta": 0.1,
            **model_args,
        },
    }
    return str(recipe(root / name, model, data or folder_data(root / "target")))
