"""A run's recipe, results and last epoch for the tests that stop and resume runs (tests/run)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kits.bad_input import SOURCE_INPUT, digit_images, folder_data, recipe, sfda


def adaptation_recipe(root: Path, source: Path, epochs: int = 2, target: str = "target", **optim) -> str:
    model = {"class_path": "sfda.methods.SHOT",
             "init_args": {"source": str(source), "beta": 0.1, **({"optim": optim} if optim else {})}}
    trainer = {"max_epochs": epochs, "default_root_dir": str(root / "runs")}
    return str(recipe(root / "shot.yaml", model, folder_data(root / target), trainer))


def source_recipe(root: Path, epochs: int = 3, **trainer) -> str:
    """A LeNet source training on 10 digit-like classes under ``root`` (artifact: ``root/source.pt``)."""
    digit_images(root / "images", [str(i) for i in range(10)], per_class=6)
    model = {"class_path": "sfda.methods.SourceTraining",
             "init_args": {"bottleneck_dim": 16, "artifact": str(root / "source.pt")}}
    data = folder_data(root / "images", role="source", input=SOURCE_INPUT)
    settings = {"max_epochs": epochs, "default_root_dir": str(root / "runs"), **trainer}
    return str(recipe(root / "source.yaml", model, data, settings))


def stop_and_resume(config: str, epoch: int) -> str:
    """``sfda fit`` stopped by SIGTERM in epoch ``epoch`` (0-based), then resumed with ``--ckpt_path last``
    to the end: the resumed run's output (version_1)."""
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=kits.faults.RequestStop",
                      f"--trainer.callbacks.epoch={epoch}")
    assert code == 143, text[-3000:]
    code, text = sfda("fit", "--config", config, "--ckpt_path", "last")
    assert code == 0, text[-3000:]
    return text


def results(root: Path, version: int = 0) -> dict:
    return json.loads((root / "runs" / f"version_{version}" / "results.json").read_text())


def last_epoch(root: Path, version: int = 0) -> int:
    path = root / "runs" / f"version_{version}" / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=True, map_location="cpu")["epoch"]
