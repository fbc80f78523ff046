"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

from kits.bad_input import (
    assert_refused,
    shot_recipe,
)


def test_a_misspelt_recipe_key_is_refused_by_name(workspace):
    assert_refused(
        ["fit", "--config", shot_recipe(workspace), "--model.init_args.betta=0.3"],
        workspace,
        "betta",
        status=2,
    )
