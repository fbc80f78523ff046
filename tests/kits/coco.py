"""COCO annotations for the box data tests: a small COCO file (optionally changed), a refused data
module that leaves the user's files as they were, and a JPEG stored turned."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kits.bad_input import snapshot

COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 20], "iscrowd": 0}],
    "categories": [{"id": d, "name": str(d)} for d in range(10)],
}


def coco_file(root: Path, change=None, text: str | None = None) -> Path:
    """``root/coco.json``: the valid COCO above, changed in place by ``change(payload)``, or ``text``."""
    payload = copy.deepcopy(COCO)
    if change is not None:
        change(payload)
    path = root / "coco.json"
    path.write_text(text if text is not None else json.dumps(payload))
    return path


def assert_data_refused(datamodule, root: Path, *needles: str) -> str:
    """Set ``datamodule`` up as a run does (its checks are those the CLI reaches, in 1/50 of the time);
    assert it refuses with every needle in the message and that no file under ``root`` changed."""
    before = snapshot(root)
    with pytest.raises(ValueError) as refused:
        datamodule.setup()
    for needle in needles:
        assert needle in str(refused.value), f"{needle!r} not in: {refused.value}"
    assert snapshot(root) == before, "a refused file was changed"
    return str(refused.value)


def turned_jpeg(path: Path) -> Path:
    """A JPEG stored 64x48 with EXIF orientation 6: a viewer displays it 48x64."""
    image = Image.fromarray(np.zeros((48, 64, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    return path
