"""``sfda sweep``: the search space and its errors, pruning inside a run, workers sharing one study."""

from __future__ import annotations

import csv
import json

import optuna
from kits.bad_input import sfda

from sfda.sweep.pruning import PRUNED_FILE, trial_arguments
from sfda.sweep.storage import default_storage, open_storage


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
