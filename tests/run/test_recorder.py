"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import csv
import json

import pytest
from kits.stops import results, source_recipe, stop_and_resume

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


@pytest.mark.slow  # two small in-process fits
def test_the_epoch_seconds_of_a_resumed_run_count_its_whole_epochs_only(tmp_path):
    # resumed at the end of epoch 2 (its checkpoint is written at its validation): epochs 3 and 4 count
    config = source_recipe(tmp_path, epochs=4, check_val_every_n_epoch=2)
    stop_and_resume(config, epoch=2)
    resumed = results(tmp_path, 1)
    assert 0 < resumed["timing/epoch_s"] <= resumed["wall_s"] / 2
    run = tmp_path / "runs" / "version_1"
    logged = [r["time/epoch_s"] for r in csv.DictReader(open(run / "metrics.csv")) if r.get("time/epoch_s")]
    assert len(logged) == 2
