"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import json

import torch
from kits.bad_input import (
    assert_refused,
    sfda,
    shot_recipe,
)

# --- 4. checkpoints: last resumes, others are checked ----


def test_test_predict_and_resume_refuse_a_checkpoint_with_non_finite_weights(adapted):
    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    key = next(k for k in checkpoint["state_dict"] if k.endswith("running_var"))
    checkpoint["state_dict"][key].fill_(float("inf"))
    torch.save(checkpoint, adapted / "inf.ckpt")
    for subcommand in ("test", "predict", "fit"):
        text = assert_refused(
            [subcommand, "--config", shot_recipe(adapted), "--ckpt_path", "inf.ckpt"],
            adapted,
            "non-finite weights",
            "running_var",
        )
        assert "inf.ckpt" in text


def test_non_finite_weights_stop_a_run_and_keep_the_last_finite_checkpoint(adapted):
    last = adapted / "runs/shot/version_0/checkpoints/last.ckpt"
    kept = last.read_bytes()
    code, text = sfda(
        "fit",
        "--config",
        shot_recipe(adapted),
        "--ckpt_path",
        str(last),
        "--trainer.max_epochs=3",
        "--trainer.callbacks+=kits.faults.InfRunningVarAtEpoch",
        "--trainer.callbacks.epoch=2",
        "--trainer.default_root_dir=runs/shot",
    )
    assert code == 1 and "non-finite weights in epoch 3/3" in text and "running_var" in text
    assert last.read_bytes() == kept
    resumed = adapted / "runs/shot/version_1/checkpoints/last.ckpt"
    assert torch.load(resumed, weights_only=True)["epoch"] == 1  # epoch 2's weights were never written
    results = adapted / "runs/shot/version_1/results.json"
    assert not results.exists() or json.loads(results.read_text())  # valid JSON if written


# --- 7. files a checkpoint or datalist names, and runs without a folder of their own ----
def test_paths_saved_in_a_checkpoint_never_delete_anything(adapted):
    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    key = next(k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint"))
    checkpoint["callbacks"][key]["best_model_path"] = "runs/shot/version_1/checkpoints/../../../../my_labels"
    torch.save(checkpoint, adapted / "handed_over.ckpt")
    (adapted / "my_labels").mkdir()
    (adapted / "my_labels" / "labels.csv").write_text("index,label\n1,2\n")
    code, text = sfda(
        "fit", "--config", shot_recipe(adapted), "--ckpt_path", "handed_over.ckpt", "--trainer.max_epochs=2"
    )
    assert code == 0, text[-2000:]
    assert (adapted / "my_labels" / "labels.csv").read_text() == "index,label\n1,2\n"
