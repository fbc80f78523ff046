"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import json

import torch
from kits.bad_input import (
    sfda,
    shot_recipe,
)

# --- 4. checkpoints: last resumes, others are checked ----


def test_scores_stored_in_a_checkpoint_never_replace_what_test_measures(adapted):
    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    checkpoint["sfda_results"]["target/acc"] = 0.999
    torch.save(checkpoint, adapted / "claims.ckpt")
    code, text = sfda("test", "--config", shot_recipe(adapted), "--ckpt_path", "claims.ckpt")
    assert code == 0, text[-2000:]
    results = json.loads(sorted(adapted.glob("runs/shot/version_*/results.json"))[-1].read_text())
    assert results["target/acc"] != 0.999 and "source_only/acc" not in results
