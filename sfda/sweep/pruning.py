"""Pruning of a sweep trial from inside its `sfda fit` run (a Lightning callback).

The sweep adds ``TrialPruning`` to the `sfda fit` command of each trial as configuration
(``trial_arguments``: ``--trainer.callbacks+=sfda.sweep.pruning.TrialPruning`` with the storage URL, study
name, trial id, objective key and pruner), so the command knows nothing of sweeps. After every validation,
rank 0 reports the objective to the study and asks the pruner; the decision is broadcast, so
every DDP rank stops together, and ``pruned.json`` in the run folder tells the sweep.
"""

from __future__ import annotations

import json
import math

import lightning as L
from lightning.pytorch.callbacks import Callback

from ..run.folder import own_run_dir
from .storage import open_storage

PRUNED_FILE = "pruned.json"


def make_pruner(spec: dict):
    """An Optuna pruner from ``{"name": "median" | "threshold" | "none", **its arguments}`` (the same
    in the sweep and in the trial's run, which loads the study without it)."""
    import optuna

    kwargs = {k: v for k, v in spec.items() if k != "name"}
    pruners = {
        "median": optuna.pruners.MedianPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }
    if spec.get("name") not in pruners:
        raise ValueError(f"--pruner: expected one of {sorted(pruners)}, got {spec.get('name')!r}")
    return pruners[spec["name"]](**kwargs)


def trial_arguments(storage: str, study: str, trial_id: int, objective: str, pruner: dict) -> list[str]:
    """The `sfda fit` arguments that add ``TrialPruning`` for this trial to its run."""
    return [
        f"--trainer.callbacks+={TrialPruning.__module__}.{TrialPruning.__name__}",
        f"--trainer.callbacks.storage={storage}",
        f"--trainer.callbacks.study={study}",
        f"--trainer.callbacks.trial_id={trial_id}",
        f"--trainer.callbacks.objective={objective}",
        f"--trainer.callbacks.pruner={json.dumps(pruner)}",
    ]


class TrialPruning(Callback):
    """Report ``objective`` to Optuna trial ``trial_id`` after each validation; stop when pruned."""

    def __init__(self, storage: str, study: str, trial_id: int, objective: str, pruner: dict | None = None):
        self.storage, self.study, self.trial_id, self.objective = storage, study, trial_id, objective
        self.pruner = pruner or {"name": "none"}
        self._trial = None

    def trial(self):
        if self._trial is None:
            import optuna

            study = optuna.load_study(
                study_name=self.study, storage=open_storage(self.storage), pruner=make_pruner(self.pruner)
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        prune = False
        if trainer.is_global_zero and self.objective in trainer.callback_metrics:
            value = float(trainer.callback_metrics[self.objective])
            if math.isfinite(value):
                self.trial().report(value, step=trainer.current_epoch)
                prune = self.trial().should_prune()
        prune = bool(trainer.strategy.broadcast(prune))
        run = own_run_dir(trainer)
        if prune:
            if trainer.is_global_zero and run is not None:
                (run / PRUNED_FILE).write_text(
                    json.dumps({"epoch": trainer.current_epoch, "objective": self.objective})
                )
            trainer.should_stop = True
