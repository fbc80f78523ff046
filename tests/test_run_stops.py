"""Catalogue of issue 27, items 3 and 4: a stopped run says so, a collapsed run stops.

A run stopped by a signal (SIGTERM from a scheduler or ``kill``, SIGINT from Ctrl-C) exits 128 + the signal,
writes results.json with ``stopped: true``, says how to resume and keeps the checkpoint it resumes from;
source training writes no artifact copy. A run whose predicted class marginal collapses is stopped by the
label-free collapse guard, keeps its last healthy checkpoint and says which epoch and figures; a target that
legitimately lacks classes is not stopped, and ``collapse_guard: false`` turns the guard off."""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from bad_input_kit import digit_images, folder_data, recipe, sfda, snapshot
from conftest import ROOT

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
SOURCE_INPUT = {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}


class RequestStop(L.Callback):
    """What a signal does, delivered at a known point: at the first training batch of epoch ``epoch``
    (0-based), SIGTERM sets Lightning's flag as its handler would, SIGINT raises KeyboardInterrupt as
    Python's handler would."""

    def __init__(self, signal: str = "SIGTERM", epoch: int = 1):
        self.signal, self.epoch = signal, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            self.deliver(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.deliver(trainer)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.deliver(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.state.fn == "validate" and batch_idx == 0:  # `sfda validate`, not fit's validation
            self.deliver(trainer)

    def deliver(self, trainer):
        if self.signal == "SIGINT":
            raise KeyboardInterrupt
        trainer._signal_connector.received_sigterm = True


class CollapseAtEpoch(L.Callback):
    """At the start of training epoch ``epoch`` (0-based) push the classifier's bias for class 0 so far up
    that every sample is predicted class 0: a collapse, with finite weights."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.network.head.bias[0] = 1e4


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


def adaptation_recipe(root: Path, source: Path, epochs: int = 2, target: str = "target", **optim) -> str:
    model = {"class_path": "sfda.methods.SHOT",
             "init_args": {"source": str(source), "beta": 0.1, **({"optim": optim} if optim else {})}}
    trainer = {"max_epochs": epochs, "default_root_dir": str(root / "runs")}
    return str(recipe(root / "shot.yaml", model, folder_data(root / target), trainer))


def results(root: Path, version: int = 0) -> dict:
    return json.loads((root / "runs" / f"version_{version}" / "results.json").read_text())


def last_epoch(root: Path, version: int = 0) -> int:
    path = root / "runs" / f"version_{version}" / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=True, map_location="cpu")["epoch"]


# --- 3. a stopped run says so: exit 128 + signal, results.json, how to resume ---
@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_fit_stopped_by_a_signal_exits_with_its_status_and_says_how_to_resume(workspace, source, name,
                                                                                status):
    config = adaptation_recipe(workspace, source, epochs=4)
    stop = ["--trainer.callbacks+=test_run_stops.RequestStop", f"--trainer.callbacks.signal={name}",
            "--trainer.callbacks.epoch=2"]
    code, text = sfda("fit", "--config", config, *stop)
    assert code == status, text[-3000:]
    run = workspace / "runs" / "version_0"
    written = results(workspace)
    assert written["stopped"] is True and written["stopped/signal"] == name
    assert written["stopped/epoch"] == 3 and written["epochs"] == 2 and written["stopped/step"] > 0
    assert "source_only/acc" in written and "target/acc" in written  # what was measured so far
    assert written["stopped/checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert last_epoch(workspace) == 1  # the last complete epoch's checkpoint, to resume from
    assert f"stopped by {name} in epoch 3/4" in text and str(run / "results.json") in text
    assert f"resume with: sfda fit --config {config}" in text
    assert f"--ckpt_path {run / 'checkpoints' / 'last.ckpt'}" in text and "--ckpt_path last" in text
    assert not (run / "report").exists()  # no end-of-run evidence for a stopped run


def test_the_resume_command_a_stopped_fit_prints_continues_it(workspace, source):
    config = adaptation_recipe(workspace, source, epochs=3)
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=test_run_stops.RequestStop",
                      "--trainer.callbacks.epoch=1")
    assert code == 143, text[-3000:]
    command = shlex.split(text.split("resume with: ")[1].splitlines()[0])
    assert command[:2] == ["sfda", "fit"] and "--ckpt_path" in command
    # the printed command repeats the stop request; drop it, as the user would not send a signal again
    resumed = [a for a in command[1:] if "RequestStop" not in a and "callbacks.epoch" not in a]
    code, text = sfda(*resumed)
    assert code == 0, text[-3000:]
    assert results(workspace, 1)["epochs"] == 3 and "stopped" not in results(workspace, 1)
    assert last_epoch(workspace, 1) == 2


def test_a_stop_before_the_first_checkpoint_keeps_its_results_and_says_to_start_again(workspace, source):
    config = adaptation_recipe(workspace, source, epochs=3)
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=test_run_stops.RequestStop",
                      "--trainer.callbacks.epoch=0")
    assert code == 143, text[-3000:]
    written = results(workspace)
    assert written["stopped"] is True and written["stopped/checkpoint"] is None and written["epochs"] == 0
    assert "no checkpoint was written before the stop" in text and f"sfda fit --config {config}" in text
    assert "resume with" not in text


def test_a_source_training_stopped_by_a_signal_writes_no_artifact(workspace):
    artifact = workspace / "model.pt"
    model = {"class_path": "sfda.methods.SourceTraining",
             "init_args": {"bottleneck_dim": 16, "artifact": str(artifact)}}
    data = folder_data(workspace / "target", role="source", input=SOURCE_INPUT)
    config = recipe(workspace / "source.yaml", model, data,
                    {"max_epochs": 3, "default_root_dir": str(workspace / "runs")})
    code, text = sfda("fit", "--config", str(config), "--trainer.callbacks+=test_run_stops.RequestStop",
                      "--trainer.callbacks.epoch=1")
    assert code == 143, text[-3000:]
    assert not artifact.exists() and not (workspace / "runs" / "version_0" / "source.pt").exists()
    assert results(workspace)["stopped"] is True and last_epoch(workspace) == 0
    assert "resume with: sfda fit" in text


def signalled_run(root: Path, config: str, sig: signal.Signals, *extra: str) -> tuple[int, str]:
    """Start ``sfda fit`` as a process, send it ``sig`` once its first checkpoint exists: (exit status,
    stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("SFDA_RUN_VERSION", None)
    process = subprocess.Popen([sys.executable, "-m", "sfda.cli", "fit", "--config", config, *extra,
                                "--trainer.enable_progress_bar=false"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = root / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)  # a hang fails here
    return process.returncode, err


def test_a_test_run_stopped_by_a_signal_says_so_and_is_not_a_result(workspace, source):
    model = {"class_path": "sfda.methods.SourceOnly", "init_args": {"source": str(source)}}
    digit_images(workspace / "big", NAMES, per_class=8, seed=3)  # more than one evaluation batch
    config = recipe(workspace / "source_only.yaml", model, folder_data(workspace / "big"),
                    {"default_root_dir": str(workspace / "runs")})
    code, text = sfda("test", "--config", str(config), "--trainer.callbacks+=test_run_stops.RequestStop")
    assert code == 143, text[-3000:]
    written = results(workspace)
    assert written["stopped"] is True and written["stopped/signal"] == "SIGTERM"
    assert "target/acc" not in written  # a partial evaluation is no score
    assert "sfda: stopped by SIGTERM" in text and "resume with" not in text


@pytest.mark.parametrize("subcommand", ["predict", "validate"])
def test_a_predict_or_validate_run_stopped_by_sigterm_exits_143_and_says_so(workspace, source, subcommand):
    """Lightning's predict loop never reads its SIGTERM flag: sfda stops it after the batch, as test."""
    model = {"class_path": "sfda.methods.SourceOnly", "init_args": {"source": str(source)}}
    digit_images(workspace / "big", NAMES, per_class=8, seed=3)  # more than one evaluation batch
    config = recipe(workspace / "source_only.yaml", model, folder_data(workspace / "big"),
                    {"default_root_dir": str(workspace / "runs")})
    before = {p for p in workspace.rglob("*") if "runs" not in p.parts}
    code, text = sfda(subcommand, "--config", str(config), "--trainer.callbacks+=test_run_stops.RequestStop")
    assert code == 143, text[-3000:]
    written = results(workspace)
    assert written["stopped"] is True and written["stopped/signal"] == "SIGTERM"
    assert f"sfda: stopped by SIGTERM during {subcommand}, before it finished" in text, text[-3000:]
    assert "resume with" not in text
    assert {p for p in workspace.rglob("*") if "runs" not in p.parts} == before  # no predictions file beside


@pytest.mark.slow  # a real signal needs a real process
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_real_signal_stops_the_sfda_process_with_its_status_and_a_checkpoint(tmp_path, source, sig):
    digit_images(tmp_path / "target", NAMES, per_class=4, seed=1)
    config = adaptation_recipe(tmp_path, source, epochs=400)
    code, err = signalled_run(tmp_path, config, sig)
    assert code == 128 + sig, err[-3000:]
    written = results(tmp_path)
    assert written["stopped"] is True and written["stopped/signal"] == sig.name
    assert 1 <= written["epochs"] < 400 and Path(written["stopped/checkpoint"]).is_file()
    assert f"stopped by {sig.name}" in err and "resume with: sfda fit --config" in err
    # it resumes from that checkpoint (one more epoch, then stopped cleanly)
    code, text = sfda("fit", "--config", config, "--ckpt_path", "last", "--trainer.callbacks+=sfda.run.stops."
                      "StopAfterEpochs", f"--trainer.callbacks.epochs={written['epochs'] + 1}")
    assert code == 0, text[-3000:]
    assert results(tmp_path, 1)["epochs"] == written["epochs"] + 1


@pytest.mark.ddp
def test_a_sigterm_stops_every_ddp_process_at_the_same_step(tmp_path, source):
    # Lightning's own handler broadcasts inside the signal handler: 2 CPU processes hung there
    digit_images(tmp_path / "target", NAMES, per_class=4, seed=1)
    config = adaptation_recipe(tmp_path, source, epochs=400)
    code, err = signalled_run(tmp_path, config, signal.SIGTERM, "--trainer.strategy=ddp",
                              "--trainer.devices=2", "--trainer.accelerator=cpu")
    assert code == 143, err[-3000:]
    written = results(tmp_path)
    assert written["stopped"] is True and written["stopped/signal"] == "SIGTERM" and written["epochs"] >= 1
    assert err.count("sfda: stopped by SIGTERM") == 1  # said once, by rank 0


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
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=test_run_stops.CollapseAtEpoch",
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
                      "--trainer.callbacks+=test_run_stops.CollapseAtEpoch", "--trainer.callbacks.epoch=1")
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
