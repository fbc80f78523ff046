"""Catalogue of issue 27, items 3 and 4: a stopped run says so, a collapsed run stops.

A run stopped by a signal (SIGTERM from a scheduler or ``kill``, SIGINT from Ctrl-C) exits 128 + the signal,
writes results.json with ``stopped: true``, says how to resume and keeps the checkpoint it resumes from;
source training writes no artifact copy. A run whose predicted class marginal collapses is stopped by the
label-free collapse guard, keeps its last healthy checkpoint and says which epoch and figures; a target that
legitimately lacks classes is not stopped, and ``collapse_guard: false`` turns the guard off."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from kits.bad_input import SOURCE_INPUT, digit_images, folder_data, recipe, sfda
from kits.stops import adaptation_recipe, last_epoch, results, source_recipe

NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A LeNet source model trained by `sfda fit` on 10 digit-like classes of distinct brightness."""
    root = tmp_path_factory.mktemp("stops_source")
    code, text = sfda("fit", "--config", source_recipe(root, epochs=4))
    assert code == 0, text[-3000:]
    return root / "source.pt"


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    digit_images(tmp_path / "target", NAMES, per_class=4, seed=1)
    return tmp_path


# --- 3. a stopped run says so: exit 128 + signal, results.json, how to resume ---
@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_fit_stopped_by_a_signal_exits_with_its_status_and_says_how_to_resume(workspace, source, name,
                                                                                status):
    config = adaptation_recipe(workspace, source, epochs=4)
    stop = ["--trainer.callbacks+=kits.faults.RequestStop", f"--trainer.callbacks.signal={name}",
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
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=kits.faults.RequestStop",
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
    code, text = sfda("fit", "--config", config, "--trainer.callbacks+=kits.faults.RequestStop",
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
    code, text = sfda("fit", "--config", str(config), "--trainer.callbacks+=kits.faults.RequestStop",
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
    # a shell's background job (`pytest ... &`) starts with SIGINT ignored and a child inherits that, so
    # the child puts SIGINT back to its default: the test checks sfda, not how pytest was started
    process = subprocess.Popen([sys.executable, "-m", "sfda.cli", "fit", "--config", config, *extra,
                                "--trainer.enable_progress_bar=false"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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
    code, text = sfda("test", "--config", str(config), "--trainer.callbacks+=kits.faults.RequestStop")
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
    code, text = sfda(subcommand, "--config", str(config), "--trainer.callbacks+=kits.faults.RequestStop")
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
