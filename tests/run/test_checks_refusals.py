"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import json

import pytest
from kits.bad_input import (
    assert_refused,
    digit_images,
    folder_data,
    recipe,
    sfda,
    shot_recipe,
)

# --- 4. checkpoints: last resumes, others are checked ----


def test_ckpt_path_last_resumes_the_newest_run_of_the_recipe(adapted, caplog):
    with caplog.at_level("INFO"):
        code, text = sfda(
            "fit", "--config", shot_recipe(adapted), "--ckpt_path", "last", "--trainer.max_epochs=2"
        )
    assert code == 0, text[-2000:]
    assert (
        "Restored all states from the checkpoint at runs/shot/version_0/checkpoints/last.ckpt" in caplog.text
    )
    assert json.loads((adapted / "runs/shot/version_1/results.json").read_text())["epochs"] == 2


def test_ckpt_path_last_without_a_run_says_where_it_looked(workspace):
    assert_refused(
        ["fit", "--config", shot_recipe(workspace), "--ckpt_path", "last"],
        workspace,
        "--ckpt_path last: no checkpoints/last.ckpt under runs/shot",
    )


def test_a_checkpoint_of_another_method_is_refused(adapted):
    tent = recipe(
        adapted / "tent.yaml",
        {"class_path": "sfda.methods.Tent", "init_args": {"source": str(adapted / "source.pt")}},
        folder_data(adapted / "target"),
    )
    assert_refused(
        ["test", "--config", str(tent), "--ckpt_path", "runs/shot/version_0/checkpoints/last.ckpt"],
        adapted,
        "written by sfda.methods.shot.SHOT",
        "sfda.methods.tent.Tent",
    )


def test_a_file_that_is_not_a_checkpoint_is_refused(workspace):
    (workspace / "notes.ckpt").write_text("hello")
    assert_refused(
        ["test", "--config", shot_recipe(workspace), "--ckpt_path", "notes.ckpt"],
        workspace,
        "notes.ckpt is not a readable checkpoint",
    )


def test_testing_an_adaptation_recipe_without_a_checkpoint_is_refused(workspace):
    assert_refused(
        ["test", "--config", shot_recipe(workspace)], workspace, "without --ckpt_path", "source_only"
    )


# --- 5. trainer, optimiser and data values ----
@pytest.mark.parametrize(
    "override, needle",
    [
        ("--model.init_args.optim.lr=-0.01", "model.optim.lr: expected > 0"),
        ("--model.init_args.optim.momentum=1.5", "model.optim.momentum: expected in [0, 1)"),
        ("--data.init_args.batch_size=0", "data.batch_size: expected an integer >= 1"),
        ("--data.init_args.eval_batch_size=-4", "data.eval_batch_size: expected an integer >= 1"),
        ("--data.init_args.eval_subset=0", "data.eval_subset: expected an integer >= 1"),
        ("--data.init_args.train_subset=0", "data.train_subset: expected an integer >= 1"),
        ("--trainer.max_epochs=-2", "trainer.max_epochs: expected -1"),
        ("--trainer.max_epochs=0", "trainer.max_epochs: 0 means the run does no training step"),
        ("--trainer.max_steps=0", "trainer.max_steps: 0 means"),
        ("--trainer.limit_train_batches=0", "trainer.limit_train_batches: 0 means"),
        ("--data.init_args.batch_size=1000", "data.batch_size: 1000 is larger than the 40 training samples"),
    ],
)
def test_values_that_cannot_work_are_refused_by_field(workspace, override, needle):
    assert_refused(["fit", "--config", shot_recipe(workspace), override], workspace, needle)


def test_a_checkpoint_of_another_target_set_names_the_shapes(adapted):
    digit_images(adapted / "target", ["0"], per_class=8)  # 4 more images than when it was adapted
    assert_refused(
        ["fit", "--config", shot_recipe(adapted), "--ckpt_path", "last", "--trainer.max_epochs=2"],
        adapted,
        "does not fit this recipe",
        "pseudo_labels: (40,) in the checkpoint, (44,) for this recipe",
    )


def test_ckpt_path_best_is_refused_by_name(workspace):
    assert_refused(
        ["test", "--config", shot_recipe(workspace), "--ckpt_path", "best"],
        workspace,
        "--ckpt_path best",
        "expected 'last'",
    )


def test_a_run_without_a_folder_of_its_own_is_refused_or_writes_nothing(workspace):
    assert_refused(
        ["fit", "--config", shot_recipe(workspace), "--trainer.logger=false"], workspace, "trainer.logger"
    )
    for _ in range(2):  # fast_dev_run has no version folder: it writes no config, results or predictions
        code, text = sfda("fit", "--config", shot_recipe(workspace), "--trainer.fast_dev_run=true")
        assert code == 0, text[-2000:]
    assert not list(workspace.glob("runs/shot/*.json")) and not list(workspace.glob("runs/shot/*.yaml"))
