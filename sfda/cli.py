"""The `sfda` command: LightningCLI with omegaconf recipes, a run directory per run, and defaults.

    sfda fit --config recipes/digits/svhn_mnist/shot.yaml
    sfda test --config recipes/digits/svhn_mnist/source_only.yaml
    sfda fit --config <recipe> --print_config

A run directory ``<trainer.default_root_dir>/version_N`` holds config.yaml, run_info.json,
results.json, checkpoints/, CSV metrics and TensorBoard events.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from .callbacks import ChannelsLast, PredictionCSV, RunRecorder, StepSeeder
from .mask_writer import MaskWriter
from .models.norm import GlobalBatchNormSync

VERSION_ENV = "SFDA_RUN_VERSION"
# Epoch-level values sfda logs under these prefixes are computed over all processes already (torchmetrics
# gathers its states, the engine's banks are global), so Lightning's DDP advice to add sync_dist=True
# would only average identical numbers; it is silenced for these names, and for nothing else.
GLOBAL_LOG_PREFIXES = ("label_free/", "target/", "source_val/", "source_only/", "engine/", "round")


def next_version(root: Path) -> str:
    """``version_N`` with N one above the largest existing under ``root``."""
    taken = [int(p.name.split("_")[1]) for p in root.glob("version_*") if p.name.split("_")[1].isdigit()]
    return f"version_{max(taken, default=-1) + 1}"


class SFDACLI(LightningCLI):
    """LightningCLI that adds the run directory, loggers and sfda's standard callbacks."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--channels_last", type=bool, default=True,
                            help="keep conv weights and image batches channels-last (same math, faster convolutions)")
        # BatchNorm statistics of the GLOBAL batch under DDP, so results do not depend on the process count
        # (a no-op on one process); a recipe or `--trainer.sync_batchnorm=false` turns it off
        parser.set_defaults({"trainer.sync_batchnorm": True})

    def _recipe_name(self) -> str:
        configs = self.config.get(self.subcommand, {}).get("config") or []
        return Path(str(configs[-1])).stem if configs else "run"

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
            config["logger"] = [CSVLogger(root, name="", version=version),
                                TensorBoardLogger(root, name="", version=version, default_hp_metric=False)]
        given = callbacks + list(config.get("callbacks") or [])
        if not any(isinstance(c, ModelCheckpoint) for c in given):
            callbacks.append(ModelCheckpoint(save_last=True))
        if config.get("enable_progress_bar", True) is not False and not any(isinstance(c, RichProgressBar) for c in given):
            callbacks.append(RichProgressBar(leave=True))
        if config.get("sync_batchnorm"):  # torch's SyncBatchNorm refuses CPU; ours works on any device
            config["sync_batchnorm"] = False
            plugins = config.get("plugins") or []
            config["plugins"] = [*(plugins if isinstance(plugins, list) else [plugins]), GlobalBatchNormSync()]
        callbacks += [RunRecorder(), StepSeeder(), PredictionCSV(), MaskWriter()]
        if self.config.get(self.subcommand, {}).get("channels_last", True):
            callbacks.append(ChannelsLast())
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


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``sfda`` console script."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    names = "|".join(map(re.escape, GLOBAL_LOG_PREFIXES))
    warnings.filterwarnings("ignore", message=rf"It is recommended to use `self\.log\('({names})",
                            category=PossibleUserWarning)
    SFDACLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"use_distributed_sampler": False},
        args=args,
    )
    close_process_group()  # only after success: a failed rank raises and Lightning ends the others


if __name__ == "__main__":
    main()
