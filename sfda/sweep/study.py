"""``sfda sweep``: hyper-parameters searched with Optuna, each trial a normal `sfda fit` run, scored by a
label-free validator (target labels are written beside the trials for reporting, never used).

Each trial runs as a subprocess in a folder of its own, ``<sweep dir>/trial_<number>``, created fresh for
it (a trial whose folder exists already fails rather than read another run); it is scored from the one run
it started, ``version_0`` there, and never from a run that stopped early. The sweep folder belongs to one
study (``folder``). The study is created once and joined by every later call (``load_if_exists``): a
second worker, or a rerun after an interruption, continues it until it holds ``n_trials`` finished
(complete or pruned) trials. After ``MAX_CONSECUTIVE_FAILURES`` failed trials in a row the sweep stops and
names the last error. At the end each worker writes ``trials.csv`` and ``best_recipe.yaml`` (the recipe
with the best trial's values) in the sweep folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from ..metrics.validators import get_validator
from ..recipe_files import expanded_recipe
from .folder import check_known, check_owner, check_writable, claim, folder_trials, trial_folder
from .pruning import PRUNED_FILE, make_pruner, trial_arguments
from .signals import Interrupts, signal_name
from .space import Dimension, load_space, set_key
from .storage import JOURNAL, SweepError, default_storage, open_storage

REPORTED_PREFIXES = ("target/", "selected/target/")  # an adaptation run's evaluation scores (reporting only)
MAX_CONSECUTIVE_FAILURES = 3  # failed trials in a row after which a sweep stops: every trial would fail


def reported(results: dict) -> dict:
    """The headline evaluation scores of a run's results (no per-class or per-volume keys)."""
    depth = {k: k.count("/") - k.startswith("selected/") for k in results if k.startswith(REPORTED_PREFIXES)}
    out = {k: results[k] for k, d in depth.items() if d == 1}
    if "selected/epoch" in results:
        out["selected/epoch"] = results["selected/epoch"]
    return out


class TrialFailed(RuntimeError):
    """A trial's `sfda fit` run failed; its log is in the trial folder."""


# (recipe, extra arguments) -> the recipe as ``sfda fit --print_config`` resolves it; ``sfda sweep`` passes
# ``sfda.cli.resolved_recipe`` (the sweep does not import the command)
RecipeResolver = Callable[[Path, list[str]], dict]


def as_argument(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def last_line(text: str) -> str:
    """A failed run's error from its output ``text``: the last ``sfda: error:`` line, else the last non-empty
    line; at most 300 characters."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sfda: error:")]
    return (errors or lines or [""])[-1][:300]


def describe_exit(code: int) -> str:
    """``exit 1``, or the signal that stopped a process (``exit 143, SIGTERM``)."""
    signum = -code if code < 0 else code - 128 if code > 128 else None
    names = {s.value: s.name for s in signal.Signals}
    return f"exit {code}, {names[signum]}" if signum in names else f"exit {code}"


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
        *,
        resolve: RecipeResolver,
    ):
        if n_trials < 1:
            raise SweepError(f"--n_trials: expected at least 1, got {n_trials}")
        self.recipe = Path(recipe)
        if not self.recipe.is_file():
            raise SweepError(f"--config {recipe}: no such recipe file")
        self.validator = get_validator(objective, "--objective")
        self.extra_args = list(extra_args or [])
        self.dimensions: list[Dimension] = load_space(
            Path(space), resolve(self.recipe, self.extra_args)
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
        self.interrupts = Interrupts()
        self.failures: list = []  # this worker's failed trials since its last finished one

    def known_trials(self) -> set[int]:
        """The numbers of the trials the study holds in its storage (none when it does not exist yet)."""
        if self.storage_url.startswith(JOURNAL) and not Path(self.storage_url[len(JOURNAL) :]).exists():
            return set()  # not opened: opening a journal creates its file
        storage = open_storage(self.storage_url)
        try:
            study_id = storage.get_study_id_from_name(self.study_name)
        except KeyError:
            return set()
        return {t.number for t in storage.get_all_trials(study_id, deepcopy=False)}

    def check_folder(self) -> None:
        """Refuse a sweep folder that cannot be written, belongs to another study, or holds trials or
        results this study does not know; nothing in it is changed."""
        check_writable(self.sweep_dir)
        check_owner(self.sweep_dir, self.study_name)
        on_disk = folder_trials(self.sweep_dir)  # listed before the study's trials are read
        check_known(self.sweep_dir, self.study_name, self.storage_url, on_disk, self.known_trials())

    def open_study(self):
        import optuna

        self.check_folder()
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
        claim(self.sweep_dir, self.study_name)
        return study

    def finished(self, study) -> int:
        from optuna.trial import TrialState

        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def run(self) -> Path:
        """Run trials until the study holds ``n_trials`` finished ones; returns the trials CSV.

        Raises:
            SweepStopped: SIGINT or SIGTERM (the running trial got it too and is not scored).
            SweepError: ``MAX_CONSECUTIVE_FAILURES`` trials failed in a row.
        """
        import optuna

        study = self.open_study()
        try:
            with self.interrupts:
                self.optimize(study)
        finally:
            with contextlib.suppress(ValueError):  # no complete trial: no best recipe
                self.write_best_recipe(study.best_trial)
            trials = self.write_trials(study)
        optuna.logging.get_logger("optuna").info(
            "sweep %s: %d finished trials", self.study_name, self.finished(study)
        )
        return trials

    def optimize(self, study) -> None:
        """Optuna's loop until ``n_trials`` are finished, a signal, or too many failures in a row."""
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        if self.finished(study) < self.n_trials:
            stop = MaxTrialsCallback(self.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
            study.optimize(
                self.objective, callbacks=[stop, self.after_trial], catch=(TrialFailed,), gc_after_trial=True
            )
        self.interrupts.check()
        if len(self.failures) >= MAX_CONSECUTIVE_FAILURES:
            raise SweepError(self.failures_message())

    def after_trial(self, study, trial) -> None:
        """Stop the loop on a signal, or after ``MAX_CONSECUTIVE_FAILURES`` failed trials in a row."""
        from optuna.trial import TrialState

        self.failures = [*self.failures, trial] if trial.state == TrialState.FAIL else []
        if self.interrupts.received is not None or len(self.failures) >= MAX_CONSECUTIVE_FAILURES:
            study.stop()

    def failures_message(self) -> str:
        last = self.failures[-1]
        numbers = ", ".join(str(t.number) for t in self.failures)
        log = trial_folder(self.sweep_dir, last.number) / "sfda.log"
        return (
            f"trials {numbers} failed one after another, so the sweep stops (it stops after "
            f"{MAX_CONSECUTIVE_FAILURES} failures in a row); the last said: "
            f"{last.user_attrs.get('error') or 'nothing'} (its log: {log}). "
            "Expected trials that can run: fix the recipe or the --space (a range the recipe refuses?) "
            "and rerun; the study keeps its finished trials"
        )

    def failed(self, trial, why: str, error: str | None = None) -> TrialFailed:
        """A ``TrialFailed`` for ``trial``; ``error`` (default ``why``) is kept as its "error" attribute."""
        trial.set_user_attr("error", error if error is not None else why)
        return TrialFailed(f"trial {trial.number}: {why}")

    def command(self, root: Path, params: dict, pruning: list[str] = ()) -> list[str]:
        """The `sfda fit` command of a trial in ``root`` with ``params`` (and the ``pruning`` callback's
        arguments, ``trial_arguments``)."""
        return [
            sys.executable,
            "-m",
            "sfda.cli",
            "fit",
            "--config",
            str(self.recipe),
            *self.extra_args,
            f"--trainer.default_root_dir={root}",
            "--report_evidence=false",
            *pruning,
            *(f"--{key}={as_argument(value)}" for key, value in params.items()),
        ]

    def stopped(self, trial) -> float:
        """A trial a signal stopped (or kept from starting): NaN, which Optuna records as FAIL, not scored."""
        trial.set_user_attr("error", f"stopped by {signal_name(self.interrupts.received)}; not scored")
        self.interrupts.stopped_trial = trial.number
        return math.nan

    def objective(self, trial) -> float:
        if self.interrupts.received is not None:
            return self.stopped(trial)
        params = {d.key: d.suggest(trial) for d in self.dimensions}
        root = trial_folder(self.sweep_dir, trial.number)
        trial.set_user_attr("run_dir", str(root / "version_0"))
        try:
            root.mkdir()
        except FileExistsError:
            raise self.failed(trial, f"its folder {root} exists already; it is kept as it is, and this "
                              "trial is not run (a trial reads only a run it started)") from None
        pruning = trial_arguments(self.storage_url, self.study_name, trial._trial_id, self.validator.key,
                                  self.pruner)
        env = dict(os.environ)
        env.pop("SFDA_RUN_VERSION", None)  # a fresh folder per trial: its run is version_0
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        code, out, err = self.interrupts.run(self.command(root, params, pruning), env)
        (root / "sfda.log").write_text(out + err, encoding="utf-8")
        if self.interrupts.received is not None:
            return self.stopped(trial)
        if code != 0:
            raise self.failed(trial, f"sfda fit failed ({describe_exit(code)}); see {root / 'sfda.log'}",
                              last_line(err) or None)
        return self.score(trial, self.own_run(trial, root))

    def own_run(self, trial, root: Path) -> Path:
        """The one run the trial started in its fresh folder ``root``."""
        runs = sorted(p.name for p in root.glob("version_*"))
        if runs != ["version_0"]:
            raise self.failed(trial, f"expected its one run {root / 'version_0'}, found {runs or 'none'}")
        return root / "version_0"

    def score(self, trial, run: Path) -> float:
        """The objective of a trial's finished run (pruned, stopped or unscored runs raise)."""
        import optuna

        if (run / PRUNED_FILE).exists():
            raise optuna.TrialPruned()
        try:
            results = json.loads((run / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise self.failed(trial, f"its run wrote no readable results.json ({err}); not scored") from None
        if results.get("stopped"):
            raise self.failed(trial, f"its run {run} was stopped before the end (results.json: stopped: "
                              "true); not scored")
        for key, value in reported(results).items():  # reporting only: target labels never choose
            trial.set_user_attr(key, value)
        selected = results.get("selected/by") == self.validator.key
        value = results.get("selected/score") if selected else results.get(self.validator.key)
        if value is None or not math.isfinite(value):
            raise self.failed(
                trial,
                f"{self.validator.key} was not logged (or not finite); the recipe must validate "
                "(trainer.check_val_every_n_epoch)",
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
        """``best_recipe.yaml``: the recipe file (its included recipes merged in, so it stands alone in the
        sweep folder) with the best trial's values set."""
        config = expanded_recipe(self.recipe)
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
