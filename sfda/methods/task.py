"""The task-agnostic base of every LightningModule in sfda: what source training and adaptation share
whatever the task (classification, segmentation, detection, and pose to come).

It records the constructor's arguments as plain data (``hparams.yaml`` and every checkpoint), holds the
optimiser settings, the ``results`` entries for ``results.json`` and the phase ``stopwatch``, builds the
optimiser and schedule over ``parameter_groups``, refuses a non-finite loss, and runs the engine's
target pass (``TargetPasses``). A task subclass owns its evaluation, predictions and writers
(``configure_callbacks``); adaptation adds ``SourceAdaptation`` (source checks, per-sample state,
source-only scores).
"""

from __future__ import annotations

import lightning as L
import torch

from ..run_checks import check_state_keys, check_state_shapes
from ..timing import Stopwatch
from .hparams import record_hyperparameters
from .optim import Optim, build_optimizer, check_finite
from .target_pass import TargetPasses


class TaskModule(TargetPasses, L.LightningModule):
    """Base of the task modules. Subclasses set ``default_optim`` (the task's usual optimiser) and
    ``network``; ``parameter_groups`` defaults to every trainable parameter at ``optim.lr``."""

    default_optim: Optim = Optim()
    network: torch.nn.Module

    def __init__(self, optim: Optim | None = None):
        super().__init__()
        record_hyperparameters(self)  # the method's arguments, in every checkpoint and hparams.yaml
        self.optim = optim or self.default_optim
        self.results: dict[str, float] = {}  # extra entries for results.json
        self.stopwatch = Stopwatch()  # phase timings, reported as timing/<phase>_s

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint made for another network by the recipe fields that differ, before
        Lightning's strict load prints its key list (adaptation modules extend this)."""
        check_state_shapes(self, checkpoint, self.trainer.ckpt_path)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module``'s; the strict load of ``--ckpt_path`` refuses missing or unknown tensors by the
        recipe fields that differ (``check_state_keys``), not with torch's key list."""
        if strict and self._trainer is not None and self.trainer.ckpt_path:
            check_state_keys(self, state_dict, self.trainer.ckpt_path)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups; subclasses choose which parameters train and at which rate."""
        return [{"params": [p for p in self.network.parameters() if p.requires_grad], "lr": self.optim.lr}]

    def optimizer_specs(self) -> list[tuple[list[dict], Optim]]:
        """One ``(parameter groups, settings)`` per optimiser. Default: one optimiser over
        ``parameter_groups`` with ``optim``; a method with several networks trained apart (pose SFDA's
        source, intermediate and target networks) returns one entry each and uses manual optimisation."""
        return [(self.parameter_groups(), self.optim)]

    def configure_optimizers(self):
        built = [build_optimizer(self, groups, settings) for groups, settings in self.optimizer_specs()]
        return built[0] if len(built) == 1 else built

    def first_evaluation_items(self, count: int) -> dict:
        """The first ``count`` items of the evaluation loader's first batch, on this device (what the
        report's overlays draw)."""
        first = next(iter(self.trainer.datamodule.val_dataloader()))
        return {k: v[:count] for k, v in self.transfer_batch_to_device(first, self.device, 0).items()}

    def on_before_backward(self, loss: torch.Tensor) -> None:
        check_finite(self, loss)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._batch_in_epoch = batch_idx

    def log(self, name: str, value, *args, **kwargs) -> None:
        """``LightningModule.log``, thinned inside ``training_step`` (see ``passes_step_log``)."""
        if args or self.passes_step_log(kwargs):
            super().log(name, value, *args, **kwargs)

    def passes_step_log(self, options: dict) -> bool:
        """Whether a ``log`` call with ``options`` goes through. In ``training_step`` a per-step value
        (``on_epoch`` not set) goes through only at the steps the loggers write (every
        ``trainer.log_every_n_steps``) and at each epoch's first and last step (the progress bar, the
        console's epoch line): what the loggers record is unchanged. Each ``log`` call costs about
        1.5 ms of Lightning's bookkeeping, and on a GPU the progress bar reading it is a device sync."""
        trainer = self._trainer
        if trainer is None or self._current_fx_name != "training_step" or options.get("on_epoch"):
            return True
        step = getattr(self, "_batch_in_epoch", 0)
        # the loggers' own test: it reads the same step counter in training_step as when they write
        writes = trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)
        return writes or step == 0 or step + 1 >= trainer.num_training_batches
