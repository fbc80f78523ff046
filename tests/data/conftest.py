"""The data tests' shared fixture: a user's folder with two small images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture()
def user(tmp_path, monkeypatch) -> Path:
    """A user's folder (also the cwd) with the 64x48 image a.png and a second image b.png."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SFDA_RUN_VERSION", raising=False)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "b.png")
    return tmp_path
