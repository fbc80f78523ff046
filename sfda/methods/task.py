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
