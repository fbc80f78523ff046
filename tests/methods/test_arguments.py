"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import pytest
from kits.bad_input import (
    SHOT,
    assert_refused,
    folder_data,
    recipe,
)


@pytest.mark.parametrize(
    "method, args, needle",
    [
        (SHOT, {"beta": -1.0}, "model.beta: expected a value >= 0"),
        (SHOT, {"rounds": 0}, "model.rounds"),
        ("sfda.methods.NRC", {"kk": 100}, "model.kk: expected a neighbour count in [1, 39]"),
    ],
)
def test_method_values_that_cannot_work_are_refused(workspace, method, args, needle):
    model = {"class_path": method, "init_args": {"source": str(workspace / "source.pt"), **args}}
    path = recipe(workspace / "method.yaml", model, folder_data(workspace / "target"))
    assert_refused(["fit", "--config", str(path)], workspace, needle)
