"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import json

from kits.bad_input import (
    SOURCE_INPUT,
    assert_refused,
    folder_data,
    recipe,
    sfda,
    snapshot,
)

from sfda.models import load_artifact


def source_recipe(root, **model_args):
    model = {"class_path": "sfda.methods.SourceTraining", "init_args": {"bottleneck_dim": 16, **model_args}}
    data = folder_data(root / "target", role="source", input=SOURCE_INPUT)
    return str(recipe(root / "source_train.yaml", model, data))


# --- 2. no run destroys a model ----
def test_a_smoke_run_never_replaces_a_trained_artifact(workspace):
    trained = workspace / "published" / "source.pt"
    trained.parent.mkdir()
    trained.write_bytes((workspace / "source.pt").read_bytes())
    before = snapshot(workspace)
    for smoke in ("--trainer.fast_dev_run=true", "--trainer.limit_train_batches=1"):
        code, text = sfda("fit", "--config", source_recipe(workspace, artifact=str(trained)), smoke)
        assert code == 0, text[-2000:]
    assert snapshot(workspace)["published/source.pt"] == before["published/source.pt"]
    results = json.loads(next(workspace.glob("runs/source_train/version_*/results.json")).read_text())
    assert "limit_train_batches cut the run short" in results["artifact_copy_skipped"]


def test_an_existing_artifact_path_is_refused_before_training(workspace):
    text = assert_refused(
        ["fit", "--config", source_recipe(workspace, artifact=str(workspace / "source.pt"))],
        workspace,
        "model.artifact",
        "already exists",
        "overwrite_artifact=true",
    )
    assert "Epoch" not in text


def test_an_unwritable_artifact_path_is_refused_before_training(workspace):
    (workspace / "a_file").write_text("x")
    assert_refused(
        ["fit", "--config", source_recipe(workspace, artifact=str(workspace / "a_file" / "source.pt"))],
        workspace,
        "model.artifact",
        "not a writable folder",
    )


def test_a_complete_source_run_writes_its_own_artifact_and_the_copy(workspace):
    code, text = sfda(
        "fit", "--config", source_recipe(workspace, artifact=str(workspace / "new" / "source.pt"))
    )
    assert code == 0, text[-2000:]
    own = workspace / "runs/source_train/version_0/source.pt"
    assert own.read_bytes() == (workspace / "new/source.pt").read_bytes()
    assert load_artifact(own).num_classes == 10
