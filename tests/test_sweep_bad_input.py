"""Issue 27, sweeps: a study writes only in its own folder and scores only the runs its trials started; a
space that cannot be searched is refused before any trial; a sweep stops after a few failed trials in a
row; SIGTERM / Ctrl-C stop the running trial with the sweep, which says how to resume.

Most cases run ``sfda sweep`` in-process with a stand-in for the trials' `sfda fit` (a tiny script that
writes the run folder a real run writes, with its objective taken from the trial's own parameters), so a
score read from any other run shows; the slow cases run real trials.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import optuna
import pytest
import yaml
from bad_input_kit import digit_images, folder_data, recipe, snapshot, source_artifact
from conftest import ROOT

from sfda.metrics.validators import get_validator
from sfda.sweep import main as sweep_main
from sfda.sweep.signals import Interrupts
from sfda.sweep.study import MAX_CONSECUTIVE_FAILURES, Sweep, TrialFailed, last_line

LR = "model.init_args.optim.lr"
LONG = 100_000  # epochs: a trial that only a signal ends
STOP_WITHIN = 120  # seconds from SIGTERM to the end of the sweep and its trial
# a stand-in for a trial's `sfda fit`: argv[1] the trial folder, argv[2] its parameters (JSON), argv[3]
# what to do ("ok": write version_0/results.json with label_free/im = 1000 * lr; "sigterm": the same, then
# exit 143 as a run a signal stopped; anything else: fail with that text as its error line)
FAKE_FIT = """
import json, pathlib, sys
root, params, mode = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
if mode not in ("ok", "sigterm"):
    sys.exit(print(mode, file=sys.stderr) or 1)
run = root / "version_0"
run.mkdir(parents=True)
lr = params["model.init_args.optim.lr"]
(run / "results.json").write_text(json.dumps({"label_free/im": 1000 * lr, "target/acc": lr}))
sys.exit(143 if mode == "sigterm" else 0)
"""


@pytest.fixture
def workspace(tmp_path):
    """A tiny SHOT recipe (untrained LeNet, 20 folder images) and a space over its learning rate."""
    names = [str(i) for i in range(10)]
    digit_images(tmp_path / "target", names, per_class=2)
    source = source_artifact(tmp_path / "source.pt", names)
    model = {
        "class_path": "sfda.methods.SHOT",
        "init_args": {"source": str(source), "beta": 0.1, "optim": {"name": "sgd", "lr": 0.01}},
    }
    config = recipe(tmp_path / "shot.yaml", model, folder_data(tmp_path / "target"), {"max_epochs": 1})
    space = tmp_path / "space.yaml"
    space.write_text(f"{LR}: {{type: float, low: 1.0e-3, high: 1.0e-1, log: true}}\n")
    return tmp_path, config, space


def fake_trials(monkeypatch, mode: str = "ok") -> None:
    """Trials run FAKE_FIT instead of `sfda fit`."""

    def command(self, root, params, pruning=()):
        return [sys.executable, "-c", FAKE_FIT, str(root), json.dumps(params), mode]

    monkeypatch.setattr(Sweep, "command", command)


def sweep(config, space, sweep_dir, *options: str) -> tuple[int, str]:
    """``sfda sweep`` in-process: (exit status, stderr + stdout)."""
    out, err = io.StringIO(), io.StringIO()
    args = ["--config", str(config), "--space", str(space), "--objective", "label_free/im",
            "--sweep_dir", str(sweep_dir), "--seed", "0", "--pruner", "none", *options]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sweep_main(args)
    return code, err.getvalue() + out.getvalue()


def study_trials(sweep_dir, name: str) -> list:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "study.log"))
    )
    return optuna.load_study(study_name=name, storage=storage).trials


def assert_scored_from_own_run(sweep_dir, name: str) -> None:
    """Each complete trial's value is its own run's (1000 * its lr), and trials.csv says the same."""
    trials = [t for t in study_trials(sweep_dir, name) if t.state.name == "COMPLETE"]
    assert trials
    rows = {int(r["number"]): r for r in csv.DictReader(open(sweep_dir / "trials.csv"))}
    for trial in trials:
        run = sweep_dir / f"trial_{trial.number:04d}" / "version_0"
        own = json.loads((run / "results.json").read_text())["label_free/im"]
        assert trial.value == pytest.approx(own) == pytest.approx(1000 * trial.params[LR])
        assert float(rows[trial.number]["label_free/im"]) == pytest.approx(own)
        assert trial.user_attrs["run_dir"] == str(run)


# ---- item 1: a study writes only in its own folder, and scores only its own runs ----------------------


def test_a_second_study_in_one_sweep_folder_is_refused_and_the_first_is_kept(workspace, monkeypatch):
    folder, config, space = workspace
    fake_trials(monkeypatch)
    sweep_dir = folder / "sweeps"
    code, text = sweep(config, space, sweep_dir, "--study", "first", "--n_trials", "2")
    assert code == 0, text
    assert_scored_from_own_run(sweep_dir, "first")
    before = snapshot(sweep_dir)
    code, text = sweep(config, space, sweep_dir, "--study", "second", "--n_trials", "2")
    assert code == 1, text
    assert f"--sweep_dir {sweep_dir}: holds the files of study 'first'" in text
    assert f"choose another --sweep_dir (e.g. {sweep_dir / 'second'})" in text
    assert snapshot(sweep_dir) == before  # trials.csv, best_recipe.yaml, trial logs and runs: unchanged
    code, text = sweep(config, space, sweep_dir / "second", "--study", "second", "--n_trials", "2")
    assert code == 0, text  # the folder the message suggests works, and scores its own runs
    assert_scored_from_own_run(sweep_dir / "second", "second")
    assert {k: v for k, v in snapshot(sweep_dir).items() if not k.startswith("second/")} == before


def test_a_rerun_after_the_journal_was_deleted_is_refused_and_keeps_the_old_files(workspace, monkeypatch):
    folder, config, space = workspace
    fake_trials(monkeypatch)
    sweep_dir = folder / "sweeps"
    assert sweep(config, space, sweep_dir, "--study", "s", "--n_trials", "2")[0] == 0
    (sweep_dir / "study.log").unlink()
    before = snapshot(sweep_dir)
    code, text = sweep(config, space, sweep_dir, "--study", "s", "--n_trials", "3")
    assert code == 1, text
    assert f"--sweep_dir {sweep_dir}: holds trial folders trial_0000, trial_0001" in text
    assert "that study 's' in journal://" in text and "was its journal deleted or replaced?" in text
    assert "choose another --sweep_dir" in text
    assert snapshot(sweep_dir) == before and not (sweep_dir / "study.log").exists()


def test_results_without_trials_are_kept_when_the_journal_is_gone(workspace, monkeypatch):
    """Only trials.csv and best_recipe.yaml are left (the trial folders were cleaned away)."""
    folder, config, space = workspace
    fake_trials(monkeypatch)
    sweep_dir = folder / "sweeps"
    assert sweep(config, space, sweep_dir, "--study", "s", "--n_trials", "1")[0] == 0
    (sweep_dir / "study.log").unlink()
    for trial in sweep_dir.glob("trial_*"):
        shutil.rmtree(trial)
    before = snapshot(sweep_dir)
    code, text = sweep(config, space, sweep_dir, "--study", "s", "--n_trials", "1")
    assert code == 1 and "holds trials.csv, best_recipe.yaml that study 's'" in text, text
    assert snapshot(sweep_dir) == before


def test_a_folder_naming_another_study_is_refused_even_when_that_study_has_the_same_trials(
    workspace, monkeypatch
):
    """Study 'b' has a trial 0 elsewhere; pointed at study 'a''s folder (a trial 0 too), it is refused."""
    folder, config, space = workspace
    fake_trials(monkeypatch)
    storage = f"sqlite:///{folder / 'shared.db'}"
    for name in ("a", "b"):
        options = ("--study", name, "--n_trials", "1", "--storage", storage)
        assert sweep(config, space, folder / name, *options)[0] == 0
    before = snapshot(folder / "a")
    code, text = sweep(config, space, folder / "a", "--study", "b", "--n_trials", "2", "--storage", storage)
    assert code == 1 and f"--sweep_dir {folder / 'a'}: holds the files of study 'a'" in text, text
    assert "or --study a to continue that study" in text
    assert snapshot(folder / "a") == before


def test_a_trial_never_reads_a_run_it_did_not_start(workspace, monkeypatch):
    """A stale trial folder with a better results.json: the trial is not run, and not scored from it."""
    folder, config, space = workspace
    fake_trials(monkeypatch)
    worker = Sweep(str(config), str(space), "label_free/im", 1, sweep_dir=str(folder / "sweeps"))
    study = worker.open_study()
    stale = folder / "sweeps" / "trial_0000" / "version_0"
    stale.mkdir(parents=True)
    (stale / "results.json").write_text(json.dumps({"label_free/im": 1e9}))
    before = snapshot(folder / "sweeps" / "trial_0000")
    trial = study.ask()
    with pytest.raises(TrialFailed, match="trial_0000 exists already; it is kept as it is"):
        worker.objective(trial)
    assert snapshot(folder / "sweeps" / "trial_0000") == before


def test_a_trial_whose_run_stopped_early_is_not_scored(workspace, monkeypatch):
    """results.json saying stopped: true (a run ended by a signal) fails the trial instead of scoring it."""
    folder, config, space = workspace
    fake_trials(monkeypatch)
    worker = Sweep(str(config), str(space), "label_free/im", 1, sweep_dir=str(folder / "sweeps"))
    study = worker.open_study()
    trial = study.ask()
    run = folder / "run" / "version_0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"label_free/im": 0.5, "stopped": True}))
    with pytest.raises(TrialFailed, match="was stopped before the end .*not scored"):
        worker.score(trial, run)
    (run / "results.json").unlink()
    with pytest.raises(TrialFailed, match="wrote no readable results.json"):
        worker.score(trial, run)


# ---- item 6: spaces and folders that cannot be searched, and trials that keep failing -------------------


@pytest.mark.parametrize(
    "entry, needles",
    [
        (  # exponents written for the values, no log: every trial would get a negative learning rate
            "{type: float, low: -5, high: -1}",
            ["the recipe's value is 0.01", "low=-5, high=-1 holds no value above 0",
             "write low: 1.0e-05, high: 1.0e-01, log: true"],
        ),
        (
            "{type: float, low: -5, high: -1, log: true}",
            ["a log range needs low > 0, got low=-5", "not powers of ten: e.g. low: 1.0e-5"],
        ),
        ("{type: float, low: -4, high: 0}", ["holds no value above 0", "write low: 1.0e-04, high: 1.0e+00"]),
        ("{type: float, low: 1.0e-3, high: 1.0e-1, log: 'false'}",
         ["'log' must be true or false, got 'false'"]),
        ("{type: float, low: true, high: 0.1}", ["needs a number 'low', got True"]),
        ("{type: float, low: 1.0e-3, high: .inf}", ["expected a finite 'high', got inf"]),
        ("{type: float, low: 0.001, high: 0.1, step: 0}", ["expected a 'step' above 0, got 0"]),
    ],
)
def test_a_numeric_range_that_cannot_be_searched_is_refused_up_front(workspace, entry, needles):
    folder, config, _ = workspace
    space = folder / "bad_space.yaml"
    space.write_text(f"{LR}: {entry}\n")
    before = snapshot(folder)
    code, text = sweep(config, space, folder / "sweeps", "--n_trials", "2")
    assert code == 1, text
    assert f"{space}: {LR}:" in text and all(n in text for n in needles), text
    assert snapshot(folder) == before and not (folder / "sweeps").exists()  # no trial ran


@pytest.mark.parametrize(
    "key, entry, needles",
    [
        (
            "data.init_args.batch_size",
            "{type: categorical, choices: [16, '32', 64.0]}",
            ["the choices mix types: 16 (int), '32' (str), 64.0 (float)",
             "expected every choice of one type"],
        ),
        ("model.init_args.beta", "{type: categorical, choices: [0, 0.5]}", ["0 (int), 0.5 (float)"]),
        ("model.init_args.beta", "{type: categorical, choices: [0.1, true]}", ["0.1 (float), True (bool)"]),
        ("model.init_args.beta", "{type: categorical, choices: [0.1, [0.2]]}",
         ["choice [0.2] is not a single value; expected null, true/false, numbers or text"]),
        ("model.init_args.beta", "{type: categorical, choices: [0.1, 0.3, 0.1]}",
         ["the choices repeat 0.1; expected each value once"]),
        ("data.init_args.batch_size", "{type: int, low: 8.5, high: 32}",
         ["an int dimension needs a whole number 'low', got 8.5"]),
    ],
)
def test_choices_and_int_ranges_of_the_wrong_type_are_refused_naming_the_key(workspace, key, entry, needles):
    folder, config, _ = workspace
    space = folder / "bad_space.yaml"
    space.write_text(f"{key}: {entry}\n")
    before = snapshot(folder)
    code, text = sweep(config, space, folder / "sweeps", "--n_trials", "2")
    assert code == 1 and f"{space}: {key}:" in text and all(n in text for n in needles), text
    assert snapshot(folder) == before


def test_null_beside_one_type_is_a_valid_choice(workspace, monkeypatch):
    folder, config, _ = workspace
    space = folder / "space.yaml"
    space.write_text("model.init_args.beta: {type: categorical, choices: [null, 0.1, 0.3]}\n")
    Sweep(str(config), str(space), "label_free/im", 1, sweep_dir=str(folder / "sweeps"))  # not refused


@pytest.mark.parametrize("make", ["a file", "under a file"])
def test_a_sweep_folder_that_cannot_be_written_is_refused_before_any_trial(workspace, monkeypatch, make):
    folder, config, space = workspace
    fake_trials(monkeypatch)
    (folder / "notes.txt").write_text("mine")
    sweep_dir = folder / "notes.txt" if make == "a file" else folder / "notes.txt" / "sweeps"
    before = snapshot(folder)
    code, text = sweep(config, space, sweep_dir, "--n_trials", "1")
    assert code == 1, text
    assert f"--sweep_dir {sweep_dir}: cannot be written" in text
    assert "expected a folder this user can create and write" in text
    assert snapshot(folder) == before


@pytest.mark.parametrize("error", ["sfda: error: model.init_args.optim.lr: expected > 0, got -0.001",
                                   "Traceback: RuntimeError: out of memory"])
def test_a_sweep_stops_after_consecutive_failed_trials_naming_the_error(workspace, monkeypatch, error):
    folder, config, space = workspace
    fake_trials(monkeypatch, error)
    sweep_dir = folder / "sweeps"
    code, text = sweep(config, space, sweep_dir, "--study", "s", "--n_trials", "5")
    assert code == 1, text
    assert f"trials 0, 1, 2 failed one after another, so the sweep stops (it stops after " \
           f"{MAX_CONSECUTIVE_FAILURES} failures in a row); the last said: {error}" in text
    assert str(sweep_dir / "trial_0002" / "sfda.log") in text
    trials = study_trials(sweep_dir, "s")
    assert [t.state.name for t in trials] == ["FAIL"] * MAX_CONSECUTIVE_FAILURES
    rows = list(csv.DictReader(open(sweep_dir / "trials.csv")))
    assert [r["state"] for r in rows] == ["FAIL"] * MAX_CONSECUTIVE_FAILURES


def test_a_trial_run_ended_by_a_signal_is_not_scored_even_with_results(workspace, monkeypatch):
    """A trial's `sfda fit` that exits 143 (SIGTERM from elsewhere, e.g. a scheduler) is a failed trial."""
    folder, config, space = workspace
    fake_trials(monkeypatch, "sigterm")
    sweep_dir = folder / "sweeps"
    code, text = sweep(config, space, sweep_dir, "--study", "s", "--n_trials", "1")
    assert code == 1 and "trials 0, 1, 2 failed one after another" in text, text
    assert "sfda fit failed (exit 143, SIGTERM)" in text
    assert [t.state.name for t in study_trials(sweep_dir, "s")] == ["FAIL"] * 3
    assert not (sweep_dir / "best_recipe.yaml").exists()


# ---- item 3: SIGTERM and Ctrl-C stop the sweep and its running trial -----------------------------------


def kill_when_ready(ready, signum) -> None:
    """Send ``signum`` to this process once the file ``ready`` exists (at most 60 s)."""
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_sweep_is_forwarded_once_to_the_running_trial(tmp_path, signum):
    """In-process: the signal is recorded (not raised) and the child gets it once and reports it."""
    report, ready = tmp_path / "got.txt", tmp_path / "ready"
    child = (
        "import pathlib, signal, sys, time\n"
        f"report, ready = pathlib.Path({str(report)!r}), pathlib.Path({str(ready)!r})\n"
        f"signal.signal({int(signum)}, lambda s, f: report.open('a').write(f'{{s}}\\n'))\n"
        "ready.write_text('')\n"
        "deadline = time.time() + 10\n"
        "while not report.exists() and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
        "time.sleep(0.5)  # long enough for a second delivery to show\n"
        "sys.exit(128 + int(report.read_text().split()[0]) if report.exists() else 0)\n"
    )
    interrupts = Interrupts()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    killer = threading.Thread(target=kill_when_ready, args=(ready, signum))
    with interrupts:
        killer.start()
        code, _, err = interrupts.run([sys.executable, "-c", child], dict(os.environ))
    killer.join()
    assert interrupts.received == signum and code == 128 + signum, err
    assert report.read_text() == f"{int(signum)}\n"  # once: a terminal's Ctrl-C is not delivered twice
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers are given back


def sweep_process(folder, config, space, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "sfda", "sweep", "--config", str(config), "--space", str(space),
               "--objective", "label_free/im", "--n_trials", "1", "--study", "s", "--sweep_dir",
               str(folder / "sweeps"), "--pruner", "none", "--", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("SFDA_RUN_VERSION", None)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def child_processes(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux)."""
    with contextlib.suppress(OSError):
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    return []


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_its_trial_and_the_study_resumes(workspace):
    folder, config, space = workspace
    sweep_dir = folder / "sweeps"
    process = sweep_process(folder, config, space, f"--trainer.max_epochs={LONG}")
    checkpoints = sweep_dir / "trial_0000" / "version_0" / "checkpoints"
    deadline = time.monotonic() + 300
    children = []
    try:
        while not any(checkpoints.glob("*.ckpt")) and time.monotonic() < deadline:  # an epoch is done
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
        children = child_processes(process.pid)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=STOP_WITHIN)  # the trial would run for hours unless stopped
    finally:
        if process.poll() is None:  # failed: leave no trial running on
            for pid in [*children, process.pid]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "sfda sweep: stopped by SIGTERM; trial 0 was stopped with it and is not scored" in err
    assert "to resume it, run the same command again:\n  sfda sweep --config" in err
    assert (sweep_dir / "trial_0000" / "sfda.log").exists()  # written once the trial process had ended
    trials = study_trials(sweep_dir, "s")
    assert [t.state.name for t in trials] == ["FAIL"]
    assert "stopped by SIGTERM" in trials[0].user_attrs["error"]
    rerun = sweep_process(folder, config, space, "--trainer.max_epochs=1")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    trials = study_trials(sweep_dir, "s")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    own = json.loads((sweep_dir / "trial_0001" / "version_0" / "results.json").read_text())
    assert trials[1].value == pytest.approx(own["label_free/im"])  # scored from its own run
    best = yaml.safe_load((sweep_dir / "best_recipe.yaml").read_text())
    assert best["model"]["init_args"]["optim"]["lr"] == pytest.approx(trials[1].params[LR])


def test_best_recipe_of_an_including_recipe_stands_alone_in_the_sweep_folder(tmp_path):
    """An included recipe's path is relative to the recipe, not to the sweep folder: best_recipe.yaml holds
    the merged recipe (no ``config:`` left to resolve), with the best trial's values on top."""
    (tmp_path / "base.yaml").write_text("trainer: {max_epochs: 7, logger: true}\nmodel:\n  class_path: m.M\n"
                                        "  init_args: {beta: 0.3, optim: {lr: 0.01}}\n")
    including = tmp_path / "recipes" / "shot.yaml"
    including.parent.mkdir()
    including.write_text("config: ../base.yaml\ntrainer: {max_epochs: 2}\n")
    sweep = types.SimpleNamespace(recipe=including, extra_args=["--seed_everything=3"],
                                  sweep_dir=tmp_path / "sweep", study_name="s",
                                  validator=get_validator("label_free/im", "--objective"))
    sweep.sweep_dir.mkdir()
    best = types.SimpleNamespace(number=4, value=0.5, params={"model.init_args.optim.lr": 0.002})
    written = yaml.safe_load(Sweep.write_best_recipe(sweep, best).read_text())
    assert "config" not in written
    assert written["trainer"] == {"max_epochs": 2, "logger": True}
    assert written["model"]["init_args"] == {"beta": 0.3, "optim": {"lr": 0.002}}
    assert written["seed_everything"] == 3


def test_a_failed_trials_error_is_its_sfda_error_line_not_the_traceback_hint():
    """`sfda fit` ends a refusal with a hint line after the error; the trial's error is the error line."""
    output = ("Seed set to 0\nsfda: error: model.init_args.optim.lr: expected >= 0, got -1\n"
              "(set SFDA_TRACEBACK=1 to see where it was raised)\n")
    assert last_line(output) == "sfda: error: model.init_args.optim.lr: expected >= 0, got -1"
    assert last_line("Traceback ...\nRuntimeError: boom\n\n") == "RuntimeError: boom"


# ---- hunt item 1: a file in the sweep folder that the sweep did not write is never changed ---------------


@pytest.mark.parametrize("text", ["my own notes, not an optuna journal\n", '{"a": 1}\n', "[1, 2]\n"])
def test_a_study_log_that_is_not_a_journal_is_refused_naming_it_and_kept(workspace, monkeypatch, text):
    folder, config, space = workspace
    fake_trials(monkeypatch)
    sweep_dir = folder / "sweeps"
    sweep_dir.mkdir()
    (sweep_dir / "study.log").write_text(text)
    before = snapshot(folder)
    code, out = sweep(config, space, sweep_dir, "--n_trials", "1")
    assert code == 1, out
    assert f"{sweep_dir / 'study.log'}: is not a sweep journal" in out and "it is kept as it is" in out, out
    assert snapshot(folder) == before


def test_a_journal_named_by_storage_that_is_not_a_journal_is_refused_and_kept(workspace, monkeypatch):
    folder, config, space = workspace
    fake_trials(monkeypatch)
    notes = folder / "notes.txt"
    notes.write_text("mine\n")
    before = snapshot(folder)
    code, out = sweep(config, space, folder / "sweeps", "--n_trials", "1", "--storage", f"journal://{notes}")
    assert code == 1 and f"{notes}: is not a sweep journal" in out, out
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "key, entry, needles",
    [
        ("model.init_args.beta", "{type: categorical, choices: [true, false]}",
         ["the recipe's value is 0.1, so the key takes numbers", "choices [True, False]"]),
        ("model.init_args.open_set", "{type: categorical, choices: [0, 1]}",
         ["the recipe's value is False, so the key takes true/false", "choices [0, 1]"]),
        ("model.init_args.open_set", "{type: float, low: 0, high: 1}",
         ["the key takes true/false, but the space searches a float range"]),
    ],
)
def test_choices_that_do_not_fit_the_recipe_keys_type_are_refused_before_any_trial(
    workspace, monkeypatch, key, entry, needles
):
    folder, config, _ = workspace
    fake_trials(monkeypatch)
    space = folder / "bad_space.yaml"
    space.write_text(f"{key}: {entry}\n")
    before = snapshot(folder)
    code, text = sweep(config, space, folder / "sweeps", "--n_trials", "2")
    assert code == 1 and f"{space}: {key}:" in text and all(n in text for n in needles), text
    assert snapshot(folder) == before and not (folder / "sweeps").exists()
