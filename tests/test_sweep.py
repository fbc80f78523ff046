"""``sfda sweep``: the search space and its errors, pruning inside a run, workers sharing one study."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import optuna
import pytest
import yaml
from bad_input_kit import digit_images, folder_data, recipe, sfda, source_artifact
from conftest import ROOT

from sfda.sweep import main as sweep_main
from sfda.sweep.pruning import PRUNED_FILE, trial_arguments
from sfda.sweep.space import SpaceError, load_space
from sfda.sweep.storage import default_storage, open_storage

RESOLVED = {
    "model": {"init_args": {"optim": {"lr": 0.01}, "beta": 0.3, "schedule": None}},
    "trainer": {"max_epochs": 5},
}


@pytest.fixture
def tiny(tmp_path):
    """A tiny SHOT recipe (untrained LeNet, 30 folder images) validating every epoch."""
    names = [str(i) for i in range(10)]
    digit_images(tmp_path / "target", names, per_class=3)
    source = source_artifact(tmp_path / "source.pt", names)
    optim = {"name": "sgd", "lr": 0.01}
    model = {
        "class_path": "sfda.methods.SHOT",
        "init_args": {"source": str(source), "beta": 0.1, "optim": optim},
    }
    path = recipe(tmp_path / "shot.yaml", model, folder_data(tmp_path / "target"), {"max_epochs": 2})
    space = tmp_path / "space.yaml"
    space.write_text(
        "model.init_args.optim.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"
        "model.init_args.beta: {type: categorical, choices: [0.1, 0.3]}\n"
    )
    return tmp_path, path, space


def write_space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


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


def run_sweep(*args: str) -> tuple[int, str]:
    import contextlib
    import io

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


def test_a_trial_the_pruner_stops_ends_after_its_first_validation(tiny):
    folder, config, _ = tiny
    storage = default_storage(folder / "sweep")
    study = optuna.create_study(study_name="s", storage=open_storage(storage))
    trial = study.ask()
    prune_everything = {
        "name": "threshold",
        "upper": -1e9,
    }  # any IM value is above: prune at the first report
    code, text = sfda(
        "fit",
        "--config",
        str(config),
        f"--trainer.default_root_dir={folder / 'run'}",
        "--trainer.max_epochs=3",
        "--report_evidence=false",
        *trial_arguments(storage, "s", trial._trial_id, "label_free/im", prune_everything),
    )
    assert code == 0, text
    run = folder / "run" / "version_0"
    assert json.loads((run / PRUNED_FILE).read_text())["epoch"] == 0
    epochs = {r["epoch"] for r in csv.DictReader(open(run / "metrics.csv")) if r.get("label_free/im")}
    assert epochs == {"0"}  # stopped: no second epoch
    reported = optuna.load_study(study_name="s", storage=open_storage(storage)).trials[0].intermediate_values
    assert list(reported) == [0]


def finished(study) -> list:
    """Complete or pruned trials: what n_trials counts."""
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def sweep_process(folder, config, space, storage, n_trials):
    command = [
        sys.executable,
        "-m",
        "sfda",
        "sweep",
        "--config",
        str(config),
        "--space",
        str(space),
        "--objective",
        "label_free/im",
        "--n_trials",
        str(n_trials),
        "--storage",
        storage,
        "--study",
        "shared",
        "--sweep_dir",
        str(folder / "sweep"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("SFDA_RUN_VERSION", None)
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_two_workers_share_one_study_and_a_rerun_continues_it(tiny):
    folder, config, space = tiny
    storage = f"sqlite:///{folder / 'study.db'}"
    workers = [sweep_process(folder, config, space, storage, 4) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    done = finished(study)
    assert len(done) >= 4 and any(t.state.name == "COMPLETE" for t in done)
    assert len({t.number for t in done}) == len(done) and len({t.user_attrs["run_dir"] for t in done}) == len(
        done
    )
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials
    rerun = sweep_process(folder, config, space, storage, len(done) + 1)
    assert rerun.wait(timeout=600) == 0
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(finished(study)) == len(done) + 1 and max(t.number for t in finished(study)) >= len(done)
    rows = list(csv.DictReader(open(folder / "sweep" / "trials.csv")))
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(rows) == len(study.trials) and complete
    assert all(r["label_free/im"] and r["target/acc"] for r in complete)
    best = yaml.safe_load((folder / "sweep" / "best_recipe.yaml").read_text())
    assert best["model"]["init_args"]["optim"]["lr"] == pytest.approx(
        study.best_trial.params["model.init_args.optim.lr"]
    )


@pytest.mark.parametrize("race", ["table studies already exists",
                                  "UNIQUE constraint failed: alembic_version.version_num"])
def test_workers_racing_to_create_the_rdb_schema_retry(monkeypatch, race):
    """Two workers opening a new SQLite study together: the loser of either race retries, others raise."""
    import optuna

    from sfda.sweep.storage import rdb_storage

    calls = []

    def storage(url, engine_kwargs=None):
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError(f"(sqlite3.IntegrityError) {race}")
        return "opened"

    monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
    assert rdb_storage("sqlite:///x.db") == "opened" and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage",
                        lambda url, engine_kwargs=None: (_ for _ in ()).throw(RuntimeError("no such host")))
    with pytest.raises(RuntimeError, match="no such host"):
        rdb_storage("postgresql://nowhere/db")
