"""AdaBN (Li et al. 2017) for every task whose network has BatchNorm: re-estimate every BatchNorm's
running mean and variance on the target training samples (a cumulative average over one pass, no
gradient); weights unchanged."""

from __future__ import annotations

import torch

from ..models import SourceModel
from ..models.norm import batch_norm_layers, reset_running_statistics
from ..tasks.adaptation import Adaptation


class AdaBN(Adaptation):
    """No optimiser: one train-mode forward per target batch without gradient, the running statistics
    restarted at the first step (a cumulative average, ``momentum=None``). Run with
    ``trainer.max_epochs: 1``. Refused for a network without trainable BatchNorm; not for detection, whose
    BatchNorm stays frozen at the source statistics (``FrozenBatchNorm2d``).

    Args:
        source, evaluate_source: see ``Adaptation``.
    """

    tasks = ("classification", "segmentation", "pose")  # detection keeps BatchNorm frozen at the source's

    def __init__(self, source: SourceModel, evaluate_source: bool = True):
        super().__init__(source, evaluate_source=evaluate_source)
        self.automatic_optimization = False
        self.norm_layers = batch_norm_layers(self.network)
        if not self.norm_layers:
            raise ValueError(f"model.source: AdaBN re-estimates BatchNorm statistics, but the "
                             f"{self.task.name} network {type(self.network).__name__} has no BatchNorm layer")

    def on_train_start(self) -> None:
        super().on_train_start()  # the source model's scores, with the source statistics
        reset_running_statistics(self.norm_layers)

    def configure_optimizers(self):
        return None

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self.network.train()
        with torch.no_grad():
            self(batch["image"])
