"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kits.bad_input import (
    digit_workspace,
    folder_data,
    recipe,
    sfda,
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


# --- 4. checkpoints: last resumes, others are checked ----
@pytest.fixture()
def adapted(workspace):
    """The workspace after one real SHOT epoch: runs/shot/version_0/checkpoints/last.ckpt."""
    code, text = sfda("fit", "--config", shot_recipe(workspace))
    assert code == 0, text[-2000:]
    return workspace


def test_scores_stored_in_a_checkpoint_never_replace_what_test_measures(adapted):
    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    checkpoint["sfda_results"]["target/acc"] = 0.999
    torch.save(checkpoint, adapted / "claims.ckpt")
    code, text = sfda("test", "--config", shot_recipe(adapted), "--ckpt_path", "claims.ckpt")
    assert code == 0, text[-2000:]
    results = json.loads(sorted(adapted.glob("runs/shot/version_*/results.json"))[-1].read_text())
    assert results["target/acc"] != 0.999 and "source_only/acc" not in results
