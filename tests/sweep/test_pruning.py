"""``sfda sweep``: the search space and its errors, pruning inside a run, workers sharing one study."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
from kits.bad_input import digit_images, folder_data, recipe, sfda, source_artifact

from sfda.sweep.pruning import PRUNED_FILE, trial_arguments
from sfda.sweep.storage import default_storage, open_storage


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
