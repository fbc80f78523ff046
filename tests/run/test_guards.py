"""Catalogue of issue 27, items 3 and 4: a stopped run says so, a collapsed run stops.

A run stopped by a signal (SIGTERM from a scheduler or ``kill``, SIGINT from Ctrl-C) exits 128 + the signal,
writes results.json with ``stopped: true``, says how to resume and keeps the checkpoint it resumes from;
source training writes no artifact copy. A run whose predicted class marginal collapses is stopped by the
label-free collapse guard, keeps its last healthy checkpoint and says which epoch and figures; a target that
legitimately lacks classes is not stopped, and ``collapse_guard: false`` turns the guard off."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from kits.bad_input import SOURCE_INPUT, digit_images, folder_data, recipe, sfda, snapshot
from kits.stops import adaptation_recipe, last_epoch, results

from sfda.methods import (
    SHOT,
    MeanTeacherDetection,
    PoseSFDA,
    SegmentationSourceTraining,
    SourceTraining,
)
from sfda.metrics.validators import marginal_entropy
from sfda.run.guards import COLLAPSE_FRACTION, unguarded_reason
from sfda.tasks import ClassificationTask, SegmentationTask

NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A LeNet source model trained by `sfda fit` on 10 digit-like classes of distinct brightness."""
    root = tmp_path_factory.mktemp("stops_source")
    digit_images(root / "images", NAMES, per_class=6)
    model = {"class_path": "sfda.methods.SourceTraining",
             "init_args": {"bottleneck_dim": 16, "artifact": str(root / "source.pt")}}
    data = folder_data(root / "images", role="source", input=SOURCE_INPUT)
    trainer = {"max_epochs": 4, "default_root_dir": str(root / "runs")}
    config = recipe(root / "source.yaml", model, data, trainer)
    code, text = sfda("fit", "--config", str(config))
    assert code == 0, text[-3000:]
    return root / "source.pt"


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    digit_images(tmp_path / "target", NAMES, per_class=4, seed=1)
    return tmp_path


# --- 4. a collapsed run stops: the label-free collapse guard ---
def test_a_huge_learning_rate_collapses_and_the_guard_stops_it_naming_the_figures(workspace, source):
    config = adaptation_recipe(workspace, source, epochs=4, lr=1000.0)
    code, text = sfda("fit", "--config", config)
    assert code == 1, text[-3000:]
    written = results(workspace)
    epoch = written["collapsed/epoch"]
    assert written["collapsed"] is True and 1 <= epoch < 4  # stopped before the last epoch
    assert written["collapsed/marginal_entropy"] < written["collapsed/threshold"]
    assert written["collapsed/threshold"] == pytest.approx(COLLAPSE_FRACTION
                                                           * written["source_only/marginal_entropy"])
    shown = (f"collapsed at epoch {epoch}/4: its entropy (label_free/marginal_entropy) is "
             f"{written['collapsed/marginal_entropy']:.4f} nats, below {COLLAPSE_FRACTION} x the source "
             f"model's {written['source_only/marginal_entropy']:.4f} = {written['collapsed/threshold']:.4f}")
    assert shown in text and "collapse_guard: false" in text
    if epoch == 1:
        assert "no checkpoint was written before it" in text
    else:  # the checkpoint of the epoch before the collapse is the one kept
        assert "the last healthy checkpoint is kept" in text and last_epoch(workspace) == epoch - 2


def test_a_collapse_after_a_healthy_epoch_keeps_the_healthy_checkpoint(workspace, source):
    config = adaptation_recipe(workspace, source, epochs=3)
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=kits.faults.CollapseAtEpoch",
                      "--trainer.callbacks.epoch=1")
    assert code == 1, text[-3000:]
    assert "collapsed at epoch 2/3" in text
    kept = workspace / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"the last healthy checkpoint is kept: {kept}" in text
    assert last_epoch(workspace) == 0  # the collapsed epoch wrote no checkpoint
    assert not list((workspace / "runs" / "version_0" / "checkpoints").glob("epoch=1-*"))
    written = results(workspace)
    assert written["collapsed/epoch"] == 2 and written["collapsed/marginal_entropy"] < 0.01


def test_a_resumed_run_is_guarded_against_the_source_figure_it_measured_before(workspace, source):
    config = adaptation_recipe(workspace, source, epochs=3)
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=sfda.run.stops.StopAfterEpochs",
                      "--trainer.callbacks.epochs=1")
    assert code == 0, text[-3000:]
    measured = results(workspace)["source_only/marginal_entropy"]
    code, text = sfda("fit", "--config", config, "--ckpt_path", "last",
                      "--trainer.callbacks+=kits.faults.CollapseAtEpoch", "--trainer.callbacks.epoch=1")
    assert code == 1, text[-3000:]
    assert "collapsed at epoch 2/3" in text and f"the source model's {measured:.4f}" in text
    assert results(workspace, 1)["collapsed/source_marginal_entropy"] == measured


def test_a_normal_run_is_not_stopped_and_records_its_class_marginal(workspace, source):
    code, text = sfda("fit", "--config", adaptation_recipe(workspace, source, epochs=2))
    assert code == 0, text[-3000:]
    written = results(workspace)
    assert "collapsed" not in written
    threshold = COLLAPSE_FRACTION * written["source_only/marginal_entropy"]
    assert written["label_free/marginal_entropy"] > threshold
    assert written["source_only/marginal_entropy"] > 0.9 * math.log(10)  # ten classes, all predicted


@pytest.mark.parametrize("where", ["command line", "recipe"])
def test_collapse_guard_false_turns_the_guard_off(workspace, source, where):
    config = adaptation_recipe(workspace, source, epochs=4, lr=1000.0)  # the recipe the guard stops above
    off = ["--collapse_guard=false"] if where == "command line" else []
    if where == "recipe":
        Path(config).write_text(Path(config).read_text() + "collapse_guard: false\n")
    code, text = sfda("fit", "--config", config, *off)
    assert code == 0, text[-3000:]
    written = results(workspace)
    assert "collapsed" not in written and written["epochs"] == 4
    with open(workspace / "runs" / "version_0" / "metrics.csv") as handle:
        logged = [float(row["label_free/marginal_entropy"]) for row in csv.DictReader(handle)
                  if row.get("label_free/marginal_entropy")]
    assert len(logged) == 4 and min(logged) < COLLAPSE_FRACTION * written["source_only/marginal_entropy"]


def test_a_target_that_holds_only_some_of_the_source_classes_is_not_stopped(workspace, source):
    digit_images(workspace / "partial", ["3", "7"], per_class=10, seed=2)  # 2 of the model's 10 classes
    before = snapshot(workspace / "partial")
    code, text = sfda("fit", "--config", adaptation_recipe(workspace, source, epochs=2, target="partial"))
    assert code == 0, text[-3000:]
    written = results(workspace)
    assert "collapsed" not in written and written["label_free/marginal_entropy"] > 0.5  # two classes kept
    assert snapshot(workspace / "partial") == before


def test_the_fraction_lets_a_two_class_target_of_a_ten_class_model_through_and_stops_one_class():
    def even(predicted: list[int], classes: int = 10) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(predicted), classes).float()

    source = marginal_entropy(even(list(range(10)) * 5))  # the source spreads over all ten classes
    assert float(source) == pytest.approx(math.log(10), abs=1e-3)
    assert marginal_entropy(even([3, 7] * 25)) > COLLAPSE_FRACTION * source  # partial target: 2 classes
    assert marginal_entropy(even([3] * 49 + [7])) < COLLAPSE_FRACTION * source  # one class: collapsed


UNGUARDED = [MeanTeacherDetection, PoseSFDA, SourceTraining, SegmentationSourceTraining]


@pytest.mark.parametrize("method", UNGUARDED)
def test_tasks_without_a_class_marginal_are_not_guarded_and_say_so(method):
    reason = unguarded_reason(method.__new__(method))
    assert reason is not None and "no class marginal" in reason


def test_segmentation_is_guarded_on_its_pixel_class_marginal():
    assert ClassificationTask.class_marginal and SegmentationTask.class_marginal  # SHOT's, EntropyPrior's

    def summary(*masses: list[float]) -> float:
        rows = {"index": torch.arange(len(masses)), "entropy": torch.full((len(masses),), 0.1),
                "dice": torch.full((len(masses), 1), math.nan),  # unlabelled volumes
                "class_mass": torch.tensor(masses)}  # (C,) probability summed over each volume's voxels
        task = SegmentationTask(["background", "brain"], None)
        return task.score_rows(None, rows, "target")["label_free/marginal_entropy"]

    healthy = summary([850.0, 150.0], [950.0, 50.0])  # 10% foreground over both volumes
    assert healthy == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), abs=1e-3)
    assert summary([1000.0, 0.0], [1000.0, 0.0]) < COLLAPSE_FRACTION * healthy  # all background


def test_a_run_without_the_source_measurement_says_the_guard_does_not_apply(workspace, source):
    config = adaptation_recipe(workspace, source, epochs=1)
    code, text = sfda("fit", "--config", config, "--model.init_args.evaluate_source=false")
    assert code == 0, text[-3000:]
    assert "collapse guard: not applied to SHOT (model.evaluate_source is false" in text
    assert unguarded_reason(SHOT.__new__(SHOT)) is not None  # no evaluate_source set: not guarded


def test_nan_loss_stops_with_a_clear_error():
    from sfda.tasks.module import TaskModule

    task = TaskModule()
    with pytest.raises(FloatingPointError, match="loss is nan"):
        task.on_before_backward(torch.tensor(float("nan")))
