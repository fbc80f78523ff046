"""The guide "Adapt your timm model and deploy it" (docs/guides/deploy.md), run as written: its titled
code blocks become files (``save_model.py``, ``adapt.yaml``, ``serve.py``) and its ``commands`` block runs
line by line, in a folder holding 40 generated images as the new camera's unlabelled data."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

GUIDE = ROOT / "docs" / "guides" / "deploy.md"
BLOCK = re.compile(r'```(\w+) title="([^"]+)"\n(.*?)```', re.S)


def guide_blocks() -> dict[str, str]:
    """``{title: code}`` of the guide's titled code blocks."""
    return {title: code for _, title, code in BLOCK.findall(GUIDE.read_text())}


def run(args: list[str], cwd) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SFDA_RUN_VERSION"}
    env.update(OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, f"{shlex.join(args)}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_guide_has_the_blocks_this_test_runs():
    assert set(guide_blocks()) == {"save_model.py", "adapt.yaml", "commands", "serve.py"}
    assert len(guide_blocks()["serve.py"].strip().splitlines()) <= 12


@pytest.mark.slow  # SHOT for 15 epochs on 40 images at 224 pixels, an ONNX export, onnxruntime
def test_the_deploy_guide_runs_as_written(tmp_path):
    blocks = guide_blocks()
    rng = np.random.default_rng(0)
    (tmp_path / "new_camera").mkdir()
    for i in range(40):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "new_camera" / f"{i:04d}.png")
    for title in ("save_model.py", "adapt.yaml", "serve.py"):
        (tmp_path / title).write_text(blocks[title])
    run([sys.executable, "save_model.py"], tmp_path)
    for line in blocks["commands"].strip().splitlines():
        words = shlex.split(line)
        assert words[0] == "sfda"
        run([sys.executable, "-m", "sfda", *words[1:]], tmp_path)
    assert (tmp_path / "runs" / "adapt" / "version_0" / "export" / "onnx" / "MODEL_CARD.md").is_file()
    printed = run([sys.executable, "serve.py"], tmp_path).strip()
    assert printed in ("good", "scratch", "dent")
