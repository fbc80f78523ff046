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
import types

import pytest
import yaml
from kits.bad_input import snapshot
from kits.sweep import fake_trials, study_trials, sweep, write_space

from sfda.cli import resolved_recipe
from sfda.commands import sweep_command as sweep_main
from sfda.metrics.validators import get_validator
from sfda.sweep.study import MAX_CONSECUTIVE_FAILURES, Sweep, TrialFailed, last_line


def test_a_trial_never_reads_a_run_it_did_not_start(workspace, monkeypatch):
    """A stale trial folder with a better results.json: the trial is not run, and not scored from it."""
    folder, config, space = workspace
    fake_trials(monkeypatch)
    worker = Sweep(str(config), str(space), "label_free/im", 1, sweep_dir=str(folder / "sweeps"),
                   resolve=resolved_recipe)
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
    worker = Sweep(str(config), str(space), "label_free/im", 1, sweep_dir=str(folder / "sweeps"),
                   resolve=resolved_recipe)
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


def run_sweep(*args: str) -> tuple[int, str]:

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = sweep_main(list(args))
    return code, err.getvalue()


def test_sweep_bad_input_names_the_option(tiny):
    folder, config, space = tiny
    common = [
        "--config",
        str(config),
        "--space",
        str(space),
        "--n_trials",
        "1",
        "--sweep_dir",
        str(folder / "sweep"),
    ]
    code, text = run_sweep(*common, "--objective", "label_free/dev")
    assert (
        code == 1
        and "--objective: unknown validator 'label_free/dev'; expected one of label_free/entropy" in text
    )
    code, text = run_sweep(
        *common, "--objective", "label_free/im", "--storage", f"sqlite:///{folder}/missing/dir/x.db"
    )
    assert code == 1 and f"--storage sqlite:///{folder}/missing/dir/x.db: cannot be opened" in text
    bad = write_space(folder, "model.init_args.bta: {type: float, low: 0.1, high: 0.5}")
    code, text = run_sweep(*common[:2], "--space", str(bad), *common[4:], "--objective", "label_free/im")
    assert code == 1 and "model.init_args.bta: not a key of the recipe" in text
