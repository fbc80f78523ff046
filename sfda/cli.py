"""The `sfda` command: LightningCLI with omegaconf recipes, a run directory per run, and defaults.

    sfda fit --config recipes/digits/svhn_mnist/shot.yaml
    sfda test --config recipes/digits/svhn_mnist/source_only.yaml
    sfda fit --config <recipe> --print_config

A run directory ``<trainer.default_root_dir>/version_N`` holds config.yaml, run_info.json,
results.json, checkpoints/, CSV metrics and TensorBoard events.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Literal

import torch.distributed as dist
import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf.errors import OmegaConfBaseException

from .cli_errors import explain
from .metrics.validators import check_selection
from .models.artifact import set_recipe_dirs
from .models.norm import GlobalBatchNormSync
from .recipe_files import interpolation_error, recipe_chain, recipe_content
from .run.checkpoint_choice import ValidatorSelection, newest_selected_checkpoint
from .run.checks import (
    SPECIAL_CHECKPOINTS,
    RunConfigError,
    check_checkpoint_method,
    check_needs_checkpoint,
    check_trainer_config,
    newest_last_checkpoint,
    read_checkpoint,
)
from .run.console import PlainProgress, StoryConsole, is_terminal
from .run.guards import COLLAPSE_FRACTION, CheckpointGuard, CollapseGuard
from .run.recorder import RunConfigSaver, RunRecorder, task_name
from .run.seeding import StepSeeder
from .run.speed import ChannelsLast, FoldBatchNorm
from .run.stops import RunStop, StopTogether, stop_signal, take_stop
from .tasks.evidence import ReportEvidence

VERSION_ENV = "SFDA_RUN_VERSION"
# Epoch-level values sfda logs under these prefixes are computed over all processes already (torchmetrics
# gathers its states, the engine's banks are global), so Lightning's DDP advice to add sync_dist=True
# would only average identical numbers; it is silenced for these names, and for nothing else.
GLOBAL_LOG_PREFIXES = ("label_free/", "target/", "source_val/", "source_only/", "engine/", "round", "time/")
# Errors of bad input: printed as one message naming the field (SFDA_TRACEBACK=1 shows the traceback).
INPUT_ERRORS = (ValueError, OSError, FloatingPointError)
# run folders this process created, removed again if the run fails before a checkpoint
_new_run_dirs: list[Path] = []
_recipes_read: list[Path] = []  # the --config recipes this main() read, to name the one holding a bad key


def next_version(root: Path) -> str:
    """``version_N`` with N one above the largest existing under ``root``."""
    taken = [int(p.name.split("_")[1]) for p in root.glob("version_*") if p.name.split("_")[1].isdigit()]
    return f"version_{max(taken, default=-1) + 1}"


class SFDACLI(LightningCLI):
    """LightningCLI that adds the run directory, loggers and sfda's standard callbacks."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--channels_last", type=bool, default=True,
                            help="keep conv weights and image batches channels-last (same math, faster "
                                 "convolutions)")
        parser.add_argument("--fold_batchnorm", type=bool, default=True,
                            help="evaluate and run engine passes on a copy with eval-mode BatchNorm folded "
                                 "into the convolutions (same predictions up to float rounding, faster)")
        parser.add_argument("--collapse_guard", type=bool, default=True,
                            help="stop a fit whose predicted class marginal collapses (its entropy below "
                                 f"{COLLAPSE_FRACTION} x the source model's; sfda.run.guards.CollapseGuard), "
                                 "keeping the last "
                                 "healthy checkpoint; false for a target that holds very few of the classes")
        parser.add_argument("--report_evidence", type=bool, default=True,
                            help="at the end of fit, keep what `sfda report` shows per sample (one more "
                            "evaluation pass): predictions before/after, a feature projection, overlays")
        parser.add_argument("--selection.by", type=str | None, default=None,
                            help="pick the checkpoint by this label-free validator, e.g. label_free/im "
                            "(sfda.metrics.validators); kept as checkpoints/selected.ckpt")
        parser.add_argument("--selection.mode", type=Literal["max", "min"] | None, default=None,
                            help="max or min; default (and only accepted value): the validator's direction")
        parser.add_argument("--predict.mask_format", type=Literal["nifti", "same", "dicom-seg"],
                            default="nifti",
                            help="segmentation masks of `sfda predict`: NIfTI, each in its input's format "
                            "(NRRD, MetaImage or a DICOM series folder), or dicom-seg: one DICOM "
                            "Segmentation object per DICOM series input (other inputs are refused)")
        # BatchNorm statistics of the GLOBAL batch under DDP, so results do not depend on the process count
        # (a no-op on one process); a recipe or `--trainer.sync_batchnorm=false` turns it off
        parser.set_defaults({"trainer.sync_batchnorm": True})

    def _recipe_paths(self) -> list[Path]:
        subcommand = self.config.get("subcommand")
        configs = (self.config.get(subcommand, {}) if subcommand else self.config).get("config") or []
        return [Path(str(getattr(c, "absolute", None) or c)) for c in configs]

    def _recipe_name(self) -> str:
        paths = self._recipe_paths()
        return paths[-1].stem if paths else "run"

    def _run_root(self) -> Path:
        trainer = self.config[self.config["subcommand"]].get("trainer") or {}
        return Path(trainer.get("default_root_dir") or Path("runs") / self._recipe_name())

    def _parse_ckpt_path(self) -> None:
        """Check the run before anything is built: trainer values, and ``--ckpt_path`` (``last`` resolved to
        the newest run of this recipe's root; the file read as data). Unlike Lightning's, reads no
        hyper-parameters from the checkpoint into the config: only the recipe chooses code."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        options = self.config[subcommand]
        check_trainer_config(subcommand, options.get("trainer") or {})
        selection = options.get("selection") or {}
        if selection.get("by"):
            check_selection(selection["by"], selection.get("mode"))
        ckpt_path = options.get("ckpt_path")
        if ckpt_path == "last":
            options["ckpt_path"] = ckpt_path = str(newest_last_checkpoint(self._run_root()))
        if ckpt_path == "selected":
            selected = newest_selected_checkpoint(self._run_root())
            if selected is None:
                raise RunConfigError(f"--ckpt_path selected: no run under {self._run_root()} recorded a "
                                     "selected checkpoint; set selection.by in the recipe and run sfda fit "
                                     "first")
            options["ckpt_path"] = ckpt_path = str(selected)
        self.default_selected = None
        if not ckpt_path and subcommand in ("test", "predict", "validate"):
            self.default_selected = newest_selected_checkpoint(self._run_root())
        if ckpt_path in SPECIAL_CHECKPOINTS:
            raise RunConfigError(f"--ckpt_path {ckpt_path}: {SPECIAL_CHECKPOINTS[ckpt_path]}; expected "
                                 "'last' (the newest run of this recipe) or the path of a .ckpt file")
        if ckpt_path:
            self.checkpoint = (Path(ckpt_path), read_checkpoint(Path(ckpt_path)))

    def before_instantiate_classes(self) -> None:
        recipes = [r for p in self._recipe_paths() if p.is_file() for r in recipe_chain(p)]
        set_recipe_dirs(list(dict.fromkeys(r.parent for r in recipes)))

    def after_instantiate_classes(self) -> None:
        if self.subcommand is None:  # run=False: the caller runs the trainer itself
            return
        options = self.config[self.subcommand]
        selected = getattr(self, "default_selected", None)
        if selected is not None and not getattr(self.model, "evaluates_without_checkpoint", False):
            options["ckpt_path"] = str(selected)  # the newest run of the recipe recorded a validator's pick
            self.checkpoint = (selected, read_checkpoint(selected))
            print(f"sfda {self.subcommand}: using the selected checkpoint {selected} (see selected/* in its "
                  "results.json); pass --ckpt_path to choose another", file=sys.stderr)
        check_needs_checkpoint(self.subcommand, self.model, options.get("ckpt_path"),
                               online=getattr(self.datamodule, "is_stream", False))
        if getattr(self, "checkpoint", None) is not None:
            check_checkpoint_method(*self.checkpoint, self.model)
            self.checkpoint = None  # the weights are read again by Lightning; do not hold them twice
        self._set_mask_format(self.config[self.subcommand].get("predict") or {})

    def _set_mask_format(self, options) -> None:
        mask_format = options.get("mask_format", "nifti")
        if mask_format == "nifti":
            return
        if task_name(self.model) != "segmentation":
            raise RunConfigError(f"predict.mask_format = {mask_format}: only segmentation writes masks; "
                                 f"{type(self.model).__name__} does not")
        self.model.mask_format = mask_format

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        kwargs["weights_only"] = True  # a checkpoint is data: never unpickle code from it
        if not kwargs.get("ckpt_path") and self.config[subcommand].get("ckpt_path"):
            kwargs["ckpt_path"] = self.config[subcommand]["ckpt_path"]  # the selected default
        return kwargs

    def _instantiate_trainer(self, config: dict, callbacks: list):
        root = Path(config.get("default_root_dir") or Path("runs") / self._recipe_name())
        config["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            # children of a DDP launch (LOCAL_RANK > 0) re-run this command and inherit the version through
            # the environment; any other run, e.g. a second `main()` in a notebook, takes the next version
            if int(os.environ.get("LOCAL_RANK", 0)) > 0 and VERSION_ENV in os.environ:
                version = os.environ[VERSION_ENV]
            else:
                version = os.environ[VERSION_ENV] = next_version(root)
                _new_run_dirs.append(root / version)
            config["logger"] = [CSVLogger(root, name="", version=version),
                                TensorBoardLogger(root, name="", version=version, default_hp_metric=False)]
        given = callbacks + list(config.get("callbacks") or [])
        if not any(isinstance(c, ModelCheckpoint) for c in given):
            callbacks.append(ModelCheckpoint(save_last="link"))  # last.ckpt links to the epoch file: one copy
        bars = config.get("enable_progress_bar", True) is not False
        if bars and not is_terminal():  # a log file or CI: plain periodic lines, not a flood of bar redraws
            config["enable_progress_bar"] = False
            callbacks.append(PlainProgress())
        elif bars and not any(isinstance(c, RichProgressBar) for c in given):
            callbacks.append(RichProgressBar(leave=True))
        callbacks.append(StoryConsole())
        if config.get("sync_batchnorm"):  # torch's SyncBatchNorm refuses CPU; ours works on any device
            config["sync_batchnorm"] = False
            plugins = config.get("plugins") or []
            config["plugins"] = [*(plugins if isinstance(plugins, list) else [plugins]),
                                 GlobalBatchNormSync()]
        # tasks add writers; the recorder names the task of a method without a `task` by its class (temporary)
        callbacks += [RunRecorder(), CheckpointGuard(), StepSeeder(), StopTogether()]
        options = self.config.get(self.subcommand, {})
        if options.get("channels_last", True):
            callbacks.append(ChannelsLast())
        if options.get("fold_batchnorm", True):
            callbacks.append(FoldBatchNorm())
        if options.get("collapse_guard", True) and self.subcommand == "fit":
            callbacks.append(CollapseGuard())
        if options.get("report_evidence", True):
            callbacks.append(ReportEvidence())
        selection = options.get("selection") or {}
        if selection.get("by") and self.subcommand == "fit":
            callbacks.append(ValidatorSelection(*check_selection(selection["by"], selection.get("mode"))))
        return super()._instantiate_trainer(config, callbacks)


def close_process_group() -> None:
    """Leave a DDP run's process group together: a barrier, then destroy it.

    Lightning leaves the group open; gloo's threads torn down by the interpreter at exit abort the
    process now and then ("terminate called without an active exception", exit -6) after a run
    that succeeded. A no-op outside DDP.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def remove_failed_run_dirs() -> None:
    """Remove the run folders this process created when the run failed before writing a checkpoint, an
    artifact or results.json (they hold only the config and empty logs); a folder with any is kept."""
    while _new_run_dirs:
        folder = _new_run_dirs.pop()
        kept = any(folder.rglob("*.ckpt")) or any(folder.rglob("*.pt")) or (folder / "results.json").exists()
        if folder.is_dir() and not kept:
            shutil.rmtree(folder, ignore_errors=True)


def input_error(err: BaseException) -> BaseException | None:
    """The error to show a user as one line: the outermost exception in ``err``'s chain that is bad input
    (``INPUT_ERRORS``) raised by sfda's own code, e.g. an artifact refusal that jsonargparse wrapped while
    instantiating the model. None for anything else (a bug keeps its traceback)."""
    package = Path(__file__).resolve().parent
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        frames = traceback.extract_tb(err.__traceback__)
        raised_here = bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(package)
        if isinstance(err, INPUT_ERRORS) and raised_here:
            return err
        err = err.__cause__ or err.__context__
    return None


class SFDAArgumentParser(LightningArgumentParser):
    """Lightning's parser whose errors start with one line naming the field and the closest valid key
    (``sfda.cli_errors.explain``), followed by the detail; the usage is not printed."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        keys = [a.dest for a in parser._actions if a.dest]
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"sfda: error: {explain(message, keys, _recipes_read)}\n\n{message.strip()}\n\n"
                         f"(the accepted options: {prog} --help)\n")
        raise SystemExit(2)

    def parse_path(self, path, ext_vars=None, env=None, defaults=True, **kwargs):
        """A recipe file, checked first (UTF-8, a YAML mapping), with the recipes it includes (``config:``)
        merged deeply under it, and interpolation errors naming the file and key (``sfda.recipe_files``)."""
        _recipes_read.append(Path(os.fspath(path)))
        try:
            self._merged_recipe = recipe_content(Path(os.fspath(path)))
            return super().parse_path(path, ext_vars, env, defaults, **kwargs)
        except OmegaConfBaseException as err:
            raise interpolation_error(path, err) from err
        finally:
            self._merged_recipe = None

    def parse_string(self, content, *args, **kwargs):
        """As jsonargparse's; the text of a recipe that includes others is the merged one."""
        merged, self._merged_recipe = getattr(self, "_merged_recipe", None), None
        return super().parse_string(content if merged is None else merged, *args, **kwargs)


class DescriptionAsWritten(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help formatter, with the description's lines kept as written."""


DESCRIPTION = """sfda: adapt a trained model to unlabelled data of a new domain, without the source data.

  sfda fit --config recipes/<task>/<benchmark>/<method>.yaml    adapt (or train a source model)
  sfda test|validate|predict --config <recipe> [--ckpt_path ...] score or predict
  sfda methods                                                 list every method, its task and recipes
  sfda report RUN_DIR [RUN_DIR ...] [--out report.html]        an HTML report of one or several runs
  sfda export RUN_DIR --format onnx|torchscript|safetensors    the adapted model for deployment, checked
  sfda sweep --config <recipe> --space <space.yaml> --objective label_free/<name> --n_trials N
                                                               a label-free hyper-parameter sweep (Optuna)
  sfda fit --model.help sfda.methods.<Name>                    the arguments of one method
"""


def resume_command(args: list[str], checkpoint: Path) -> str:
    """``sfda <args>`` with ``--ckpt_path <checkpoint>`` in place of any ``--ckpt_path`` given."""
    kept, skip = [], False
    for arg in args:
        if skip or arg.startswith("--ckpt_path="):
            skip = False
            continue
        skip = arg == "--ckpt_path"
        if not skip:
            kept.append(arg)
    return shlex.join(["sfda", *kept, "--ckpt_path", str(checkpoint)])


UNFINISHED = {"predict": "predictions", "test": "scores", "validate": "scores"}  # what a stop cuts short


def stop_message(sig: signal.Signals, stop: RunStop | None, args: list[str]) -> str:
    """What a run stopped by ``sig`` tells its user: where it stopped, where its results are, how to
    resume."""
    if stop is None:
        return f"sfda: stopped by {sig.name} before the run started; nothing was trained or written"
    if stop.stage != "fit":
        lines = [f"sfda: stopped by {sig.name} during {stop.stage}, before it finished; its "
                 f"{UNFINISHED.get(stop.stage, 'results')} are incomplete: run it again to finish"]
    else:
        lines = [f"sfda: stopped by {sig.name} in epoch {stop.epoch}/{stop.max_epochs} at step {stop.step}"]
    if stop.run_dir is not None:
        lines.append(f"what it measured so far: {stop.run_dir / 'results.json'} (stopped: true)")
    if stop.stage != "fit":
        return "\n".join(lines)
    if stop.checkpoint is not None:
        lines.append(f"resume with: {resume_command(args, stop.checkpoint)}\n(or --ckpt_path last: the "
                     "newest run of this recipe)")
    else:
        lines.append("no checkpoint was written before the stop (the first one is written when epoch 1 "
                     f"ends); run it again from the start: {shlex.join(['sfda', *args])}")
    return "\n".join(lines)


def stopped_status(err: BaseException, args: list[str]) -> int | None:
    """The exit status of a run that a signal stopped (128 + its number), after telling the user (rank 0);
    None when ``err`` is not such a stop. A run that started keeps its folder (results.json says where it
    stopped); one stopped before it started leaves none."""
    stop = take_stop()
    sig = stop.signal if stop is not None else stop_signal(err)
    if sig is None:
        return None
    remove_failed_run_dirs()
    if stop is None or stop.is_global_zero:
        print(stop_message(sig, stop, args), file=sys.stderr, flush=True)
    return 128 + int(sig)


def resolved_recipe(recipe: Path, extra_args: list[str]) -> dict:
    """The recipe as ``sfda fit --print_config`` resolves it (every default filled in), in this process:
    the sweep's ``RecipeResolver`` (``sfda.commands`` passes it to ``sfda.sweep.main``). A recipe that does
    not resolve raises ValueError with the command's message."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["fit", "--config", str(recipe), *extra_args, "--print_config"])
        except SystemExit as done:
            if done.code not in (0, None):
                message = err.getvalue()[-1500:]
                raise ValueError(f"--config {recipe}: the recipe does not resolve:\n{message}") from None
    return yaml.safe_load(out.getvalue())


def cli_settings() -> dict:
    """The arguments every ``SFDACLI`` of the ``sfda`` command is made with (all but ``args``)."""
    return dict(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        parser_kwargs={"parser_mode": "omegaconf", "description": DESCRIPTION,
                       "formatter_class": DescriptionAsWritten},
        parser_class=SFDAArgumentParser,
        save_config_callback=RunConfigSaver,  # each run has its own folder: config.yaml is never replaced
        trainer_defaults={"use_distributed_sampler": False},
    )


# what a run's own config.yaml holds that `sfda predict` does not take (fit's optimiser hooks), or that
# ``loaded_run`` gives itself
NOT_PREDICT_KEYS = ("optimizer", "lr_scheduler", "ckpt_path")


def loaded_run(config: Path, checkpoint: Path, scratch: Path) -> tuple:
    """``(method, datamodule)``: the method of a run's ``config.yaml`` with ``checkpoint``'s weights, loaded
    the way ``sfda predict`` loads them (the same checks, the method's own ``on_load_checkpoint``) by a
    predict pass over ONE batch on the CPU in float32, whose outputs go under ``scratch``; and the run's
    datamodule, set up for prediction. ``sfda export`` is given this function by ``sfda.commands``. Bad
    input raises (ValueError, OSError) or exits (SystemExit 2) with the command's message."""
    recipe = yaml.safe_load(config.read_text())
    if not isinstance(recipe, dict) or "model" not in recipe:
        raise RunConfigError(f"{config}: not a run's config.yaml (expected a mapping with 'model' and "
                             "'data')")
    recipe = {k: v for k, v in recipe.items() if k not in NOT_PREDICT_KEYS}
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "config.yaml").write_text(yaml.safe_dump(recipe))
    forced = {"default_root_dir": scratch, "limit_predict_batches": 1, "accelerator": "cpu", "devices": 1,
              "strategy": "auto", "num_nodes": 1, "precision": "32-true", "enable_progress_bar": False}
    args = ["predict", "--config", str(scratch / "config.yaml"), "--ckpt_path", str(checkpoint),
            *[f"--trainer.{key}={value}" for key, value in forced.items()],
            "--report_evidence=false", "--channels_last=false", "--fold_batchnorm=false"]
    with contextlib.redirect_stdout(io.StringIO()):
        run = SFDACLI(**cli_settings(), args=args)
    return run.model, run.datamodule


def main(args: list[str] | None = None) -> None:
    """``sfda fit|validate|test|predict`` (``sfda.commands.main`` dispatches the other subcommands). Bad
    input ends with one line naming the field (exit status 1); ``SFDA_TRACEBACK=1`` shows the full
    traceback. A run stopped by a signal (SIGTERM, Ctrl-C) exits with 128 + its number (143, 130) and says
    how to resume."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    given = sys.argv[1:] if args is None else list(args)
    names = "|".join(map(re.escape, GLOBAL_LOG_PREFIXES))
    warnings.filterwarnings("ignore", message=rf"It is recommended to use `self\.log\('({names})",
                            category=PossibleUserWarning)
    take_stop()  # forget a stop of an earlier main() in this process
    _recipes_read.clear()
    try:
        SFDACLI(**cli_settings(), args=args)
    except (KeyboardInterrupt, SystemExit) as err:  # Lightning ends a Ctrl-C with sys.exit(1)
        status = stopped_status(err, given)
        if status is None:
            raise
        raise SystemExit(status) from None
    except Exception as err:
        remove_failed_run_dirs()
        shown = input_error(err)
        if shown is None or os.environ.get("SFDA_TRACEBACK"):
            raise
        print(f"sfda: error: {shown}\n(set SFDA_TRACEBACK=1 to see where it was raised)", file=sys.stderr)
        raise SystemExit(1) from None
    _new_run_dirs.clear()
    close_process_group()  # only after success: a failed rank raises and Lightning ends the others


if __name__ == "__main__":
    main()
