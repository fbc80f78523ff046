"""Issue 27, sweeps: a study writes only in its own folder and scores only the runs its trials started; a
space that cannot be searched is refused before any trial; a sweep stops after a few failed trials in a
row; SIGTERM / Ctrl-C stop the running trial with the sweep, which says how to resume.

Most cases run ``sfda sweep`` in-process with a stand-in for the trials' `sfda fit` (a tiny script that
writes the run folder a real run writes, with its objective taken from the trial's own parameters), so a
score read from any other run shows; the slow cases run real trials.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from kits.bad_input import snapshot
from kits.sweep import LR, fake_trials, study_trials, sweep


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


@pytest.mark.slow  # two real sweeps of one trial each (about 4 s): kept out of the fast tier's budget
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


@pytest.mark.slow  # two real sweeps (about 4 s): kept out of the fast tier's budget
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
