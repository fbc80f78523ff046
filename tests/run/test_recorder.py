"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import json

from sfda.tasks.pose import PoseTask


def test_results_json_stays_valid_json_with_a_nan_metric(workspace):
    from sfda.run.folder import json_safe

    text = json.dumps(json_safe({"target/acc": float("nan"), "round": [1.0, float("inf")]}), allow_nan=False)
    assert json.loads(text) == {"target/acc": None, "round": [1.0, None]}


def test_the_recorded_task_is_the_one_the_module_holds_else_the_one_its_class_works_on():
    from sfda.methods import PoseSourceTraining, SourceOnly
    from sfda.run.recorder import task_name

    class Holding(SourceOnly):  # an adaptation method holds the task of its source artifact
        def __init__(self):
            self.__dict__["task"] = PoseTask(["nose"], None)

    assert task_name(Holding()) == "pose"
    assert task_name(PoseSourceTraining()) == "pose"  # before configure_model builds its task
    assert task_name(SourceOnly.__new__(SourceOnly)) is None  # a generic method without a task yet
