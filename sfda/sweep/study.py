"""``sfda sweep``: hyper-parameters searched with Optuna, each trial a normal `sfda fit` run, scored by a
label-free validator (target labels are written beside the trials for reporting, never used).

Trials run as subprocesses in ``<sweep dir>/trial_<number>/version_0``. The study is created once and
joined by every later call (``load_if_exists``): a second worker, or a rerun after an interruption,
continues it until it holds ``n_trials`` finished (complete or pruned) trials. At the end each worker
writes ``trials.csv`` and ``best_recipe.yaml`` (the recipe with the best trial's values) in the sweep
folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from ..metrics.validators import get_validator
from .pruning import PRUNED_FILE, TRIAL_ENV, make_pruner
from .space import Dimension, load_space, set_key
from .storage import SweepError, default_storage, open_storage

REPORTED_PREFIXES = ("target/", "selected/target/")  # an adaptation run's evaluation scores (reporting only)


def reported(results: dict) -> dict:
    """The headline evaluation scores of a run's results (no per-class or per-volume keys)."""
    depth = {k: k.count("/") - k.startswith("selected/") for k in results if k.startswith(REPORTED_PREFIXES)}
    out = {k: results[k] for k, d in depth.items() if d == 1}
    if "selected/epoch" in results:
        out["selected/epoch"] = results["selected/epoch"]
    return out


class TrialFailed(RuntimeError):
    """A trial's `sfda fit` run failed; its log is in the trial folder."""


def resolved_recipe(recipe: Path, extra_args: list[str]) -> dict:
    """The recipe as ``sfda fit --print_config`` resolves it (every default filled in)."""
    from ..cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["fit", "--config", str(recipe), *extra_args, "--print_config"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise SweepError(
                    f"--config {recipe}: the recipe does not resolve:\n{err.getvalue()[-1500:]}"
                ) from None
    return yaml.safe_load(out.getvalue())


def as_argument(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class Sweep:
    """One worker of a sweep over ``recipe`` (see the module docstring)."""

    def __init__(
        self,
        recipe: str,
        space: str,
        objective: str,
        n_trials: int,
        storage: str | None = None,
        study: str | None = None,
        sweep_dir: str | None = None,
        seed: int | None = None,
        extra_args: list[str] | None = None,
        pruner: str = "median",
    ):
        if n_trials < 1:
            raise SweepError(f"--n_trials: expected at least 1, got {n_trials}")
        self.recipe = Path(recipe)
        if not self.recipe.is_file():
            raise SweepError(f"--config {recipe}: no such recipe file")
        self.validator = get_validator(objective, "--objective")
        self.extra_args = list(extra_args or [])
        self.dimensions: list[Dimension] = load_space(
            Path(space), resolved_recipe(self.recipe, self.extra_args)
        )
        self.n_trials, self.seed = n_trials, seed
        # median: a trial stops when its objective after an epoch is worse than the median of the earlier
        # trials at that epoch (from the 4th trial on, not at the first validation)
        self.pruner = (
            {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}
            if pruner == "median"
            else {"name": pruner}
        )
        make_pruner(self.pruner)
        self.study_name = study or f"{self.recipe.stem}-{self.validator.name}"
        self.sweep_dir = Path(sweep_dir or Path("runs") / "sweeps" / self.study_name)
        self.storage_url = storage or default_storage(self.sweep_dir)

    def open_study(self):
        import optuna

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        direction = "maximize" if self.validator.mode == "max" else "minimize"
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(self.storage_url),
            direction=direction,
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            pruner=make_pruner(self.pruner),
        )
        recorded = study.user_attrs.get("objective")
        if recorded is None:
            study.set_user_attr("objective", self.validator.key)
            study.set_user_attr("recipe", str(self.recipe))
        elif recorded != self.validator.key:
            raise SweepError(
                f"--study {self.study_name}: this study optimises {recorded}, not "
                f"{self.validator.key}; choose another --study name"
            )
        return study

    def finished(self, study) -> int:
        from optuna.trial import TrialState

        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def run(self) -> Path:
        """Run trials until the study holds ``n_trials`` finished ones; returns the trials CSV."""
        import optuna
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        study = self.open_study()
        if self.finished(study) < self.n_trials:
            stop = MaxTrialsCallback(self.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
            study.optimize(self.objective, callbacks=[stop], catch=(TrialFailed,), gc_after_trial=True)
        with contextlib.suppress(ValueError):  # no complete trial: no best recipe
            self.write_best_recipe(study.best_trial)
        optuna.logging.get_logger("optuna").info(
            "sweep %s: %d finished trials", self.study_name, self.finished(study)
        )
        return self.write_trials(study)

    def objective(self, trial) -> float:
        import optuna

        params = {d.key: d.suggest(trial) for d in self.dimensions}
        root = self.sweep_dir / f"trial_{trial.number:04d}"
        command = [
            sys.executable,
            "-m",
            "sfda.cli",
            "fit",
            "--config",
            str(self.recipe),
            *self.extra_args,
            f"--trainer.default_root_dir={root}",
            "--report_evidence=false",
            *(f"--{key}={as_argument(value)}" for key, value in params.items()),
        ]
        link = {
            "storage": self.storage_url,
            "study": self.study_name,
            "trial_id": trial._trial_id,
            "objective": self.validator.key,
            "pruner": self.pruner,
        }
        env = {**os.environ, TRIAL_ENV: json.dumps(link)}
        env.pop("SFDA_RUN_VERSION", None)  # a fresh folder per trial: its run is version_0
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace"
        )
        root.mkdir(parents=True, exist_ok=True)
        (root / "sfda.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        run = root / "version_0"
        trial.set_user_attr("run_dir", str(run))
        if done.returncode != 0:
            trial.set_user_attr(
                "error", done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else ""
            )
            raise TrialFailed(
                f"trial {trial.number}: sfda fit failed (exit {done.returncode}); see {root / 'sfda.log'}"
            )
        if (run / PRUNED_FILE).exists():
            raise optuna.TrialPruned()
        results = json.loads((run / "results.json").read_text())
        for key, value in reported(results).items():  # reporting only: target labels never choose
            trial.set_user_attr(key, value)
        selected = results.get("selected/by") == self.validator.key
        value = results.get("selected/score") if selected else results.get(self.validator.key)
        if value is None or not math.isfinite(value):
            raise TrialFailed(
                f"trial {trial.number}: {self.validator.key} was not logged (or not finite); the "
                "recipe must validate (trainer.check_val_every_n_epoch)"
            )
        return float(value)

    def write_trials(self, study) -> Path:
        """``trials.csv``: number, state, objective, each searched key, reporting-only metrics, run dir."""
        keys = [d.key for d in self.dimensions]
        trials = study.get_trials(deepcopy=False)
        reported_keys = sorted(
            {k for t in trials for k in t.user_attrs if k.startswith(REPORTED_PREFIXES)}
            | {k for t in trials for k in t.user_attrs if k == "selected/epoch"}
        )
        path = self.sweep_dir / "trials.csv"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["number", "state", self.validator.key, *keys, *reported_keys, "worker", "run_dir"]
            )
            for trial in trials:
                attrs = trial.user_attrs
                writer.writerow(
                    [
                        trial.number,
                        trial.state.name,
                        "" if trial.value is None else trial.value,
                        *(trial.params.get(k, "") for k in keys),
                        *(attrs.get(k, "") for k in reported_keys),
                        attrs.get("worker", ""),
                        attrs.get("run_dir", ""),
                    ]
                )
        tmp.replace(path)
        return path

    def write_best_recipe(self, best) -> Path:
        """``best_recipe.yaml``: the recipe file with the best trial's values set."""
        config = yaml.safe_load(self.recipe.read_text(encoding="utf-8"))
        for argument in self.extra_args:  # what every trial was given after --
            if argument.startswith("--") and "=" in argument:
                key, value = argument[2:].split("=", 1)
                set_key(config, key, yaml.safe_load(value))
        for key, value in best.params.items():
            set_key(config, key, value)
        path = self.sweep_dir / "best_recipe.yaml"
        header = (
            f"# sfda sweep {self.study_name}: best of the finished trials, trial {best.number}, "
            f"{self.validator.key} = {best.value:.6g} (label-free; {self.validator.mode} is better)\n"
            f"# from {self.recipe} with {', '.join(f'{k}={v}' for k, v in best.params.items())}\n"
        )
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        tmp.replace(path)
        return path
