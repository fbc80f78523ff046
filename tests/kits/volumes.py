"""Tiny volumes for the segmentation data tests: a scan and a brain mask, a source-training recipe on
one image and label, label volumes and datalists written to files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from kits.bad_input import recipe
from sfda.data.volume_files import Geometry


def scan(shape=(16, 12, 8), seed: int = 0) -> np.ndarray:
    """An image with varying intensities."""
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(np.int16)


def brain_mask(shape=(16, 12, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.int16)
    mask[4:12, 3:9, 2:6] = 1
    return mask


def segmentation_recipe(root: Path, image: Path, label: Path) -> str:
    """A source-training recipe on one datalist entry (image, label) in ``root``."""
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"id": "case", "image": str(image), "label": str(label)}]}))
    model = {
        "class_path": "sfda.methods.SegmentationSourceTraining",
        "init_args": {"artifact": str(root / "source.pt")},
    }
    data = {
        "class_path": "sfda.data.SegmentationDataModule",
        "init_args": {
            "datalist": str(datalist),
            "class_names": ["background", "brain"],
            "role": "source",
            "batch_size": 2,
            "input": {"mode": "2d", "roi": [16, 16], "spacing": [1.0, 1.0, 2.0]},
        },
    }
    return str(recipe(root / "source.yaml", model, data))


def small_volume(geometry: Geometry) -> np.ndarray:
    volume = np.zeros(geometry.shape, dtype=np.int16)
    volume[4:12, 3:9, 2:6] = 1
    return volume


def write_datalist(folder, image, label, name="case") -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"training": [{"id": name, "image": str(image), "label": str(label)}]}))
    return str(path)


def write_volume(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path.name


def datalist(tmp_path, image, label, **extra):
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": image, "label": label, **extra}]}))
    return str(path)
