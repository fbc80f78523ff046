"""A run's recipe, results and last epoch for the tests that stop and resume runs (tests/run)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kits.bad_input import folder_data, recipe


def adaptation_recipe(root: Path, source: Path, epochs: int = 2, target: str = "target", **optim) -> str:
    model = {"class_path": "sfda.methods.SHOT",
             "init_args": {"source": str(source), "beta": 0.1, **({"optim": optim} if optim else {})}}
    trainer = {"max_epochs": epochs, "default_root_dir": str(root / "runs")}
    return str(recipe(root / "shot.yaml", model, folder_data(root / target), trainer))


def results(root: Path, version: int = 0) -> dict:
    return json.loads((root / "runs" / f"version_{version}" / "results.json").read_text())


def last_epoch(root: Path, version: int = 0) -> int:
    path = root / "runs" / f"version_{version}" / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=True, map_location="cpu")["epoch"]
