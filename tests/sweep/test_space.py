"""Issue 27, sweeps: a study writes only in its own folder and scores only the runs its trials started; a
space that cannot be searched is refused before any trial; a sweep stops after a few failed trials in a
row; SIGTERM / Ctrl-C stop the running trial with the sweep, which says how to resume.

Most cases run ``sfda sweep`` in-process with a stand-in for the trials' `sfda fit` (a tiny script that
writes the run folder a real run writes, with its objective taken from the trial's own parameters), so a
score read from any other run shows; the slow cases run real trials.
"""

from __future__ import annotations

import re

import optuna
import pytest
from kits.bad_input import snapshot
from kits.sweep import LR, fake_trials, sweep, write_space

from sfda.cli import resolved_recipe
from sfda.sweep.space import SpaceError, load_space
from sfda.sweep.study import Sweep

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
    Sweep(str(config), str(space), "label_free/im", 1, sweep_dir=str(folder / "sweeps"),
                   resolve=resolved_recipe)  # not refused


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


RESOLVED = {
    "model": {"init_args": {"optim": {"lr": 0.01}, "beta": 0.3, "schedule": None}},
    "trainer": {"max_epochs": 5},
}


@pytest.mark.parametrize(
    "text, needle",
    [
        (
            "model.init_args.optim.lr: {type: float, low: 0, high: 0.1, log: true}",
            "model.init_args.optim.lr: a log range needs low > 0, got low=0",
        ),
        (
            "model.init_args.optim.lrr: {type: float, low: 0.001, high: 0.1}",
            "model.init_args.optim.lrr: not a key of the recipe",
        ),
        (
            "model.init_args.schedule.lr: {type: float, low: 0.001, high: 0.1}",
            "model.init_args.schedule is null in the recipe (the method's built-in default); "
            "write that block out",
        ),
        (
            "model.init_args.beta: {type: uniform, low: 0.1, high: 0.5}",
            "expected {type: float|int|categorical",
        ),
        ("model.init_args.beta: {type: float, low: 0.5, high: 0.1}", "expected finite low <= high"),
        (
            "model.init_args.beta: {type: categorical}",
            "a categorical dimension needs a non-empty list 'choices'",
        ),
        ("model.init_args.beta: {type: float, low: 0.1, high: 0.5, lgo: true}", "unknown fields ['lgo']"),
    ],
)
def test_a_space_that_cannot_be_searched_is_refused_naming_the_key(tmp_path, text, needle):
    with pytest.raises(SpaceError, match=re.escape(needle)):
        load_space(write_space(tmp_path, text), RESOLVED)


def test_a_space_parses_into_dimensions_optuna_can_sample(tmp_path):
    dims = load_space(
        write_space(
            tmp_path,
            "model.init_args.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
            "trainer.max_epochs: {type: int, low: 2, high: 8, step: 2}\n",
        ),
        RESOLVED,
    )
    study = optuna.create_study()
    trial = study.ask()
    lr, epochs = (d.suggest(trial) for d in dims)
    assert 1e-4 <= lr <= 1e-2 and epochs in (2, 4, 6, 8)
