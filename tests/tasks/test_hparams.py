"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import torch

# --- 4. checkpoints: last resumes, others are checked ----


def test_checkpoints_and_hparams_hold_the_methods_arguments_as_plain_data(adapted):
    import yaml as pyyaml

    checkpoint = torch.load(adapted / "runs/shot/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (
        checkpoint["hyper_parameters"]["beta"] == 0.1
        and checkpoint["sfda"]["method"] == "sfda.methods.shot.SHOT"
    )
    assert pyyaml.safe_load((adapted / "runs/shot/version_0/hparams.yaml").read_text())["beta"] == 0.1


def test_plain_turns_objects_into_data():
    from sfda.tasks.hparams import plain
    from sfda.tasks.optim import Optim

    assert plain({"optim": Optim(lr=0.5), "dims": (1, 2), "other": object()}) == {
        "optim": {**Optim().__dict__, "lr": 0.5, "milestones": []},  # tuples become lists
        "dims": [1, 2],
        "other": "builtins.object",
    }
