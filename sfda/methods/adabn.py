"""AdaBN (Li et al. 2017) for any task: re-estimate every BatchNorm's running mean and variance on the
target training samples (a cumulative average over one pass, no gradient); weights unchanged."""

from __future__ import annotations

import torch

from ..models.norm import batch_norm_layers, reset_running_statistics


class RefitsNormStatistics:
    """Mixin (before a task's adaptation base) that makes a method AdaBN: no optimiser, one train-mode
    forward per batch without gradient, running statistics restarted at the first step. Run with
    ``trainer.max_epochs: 1``."""

    def setup_norm_refit(self) -> None:
        """Call at the end of ``__init__``, once ``self.network`` is built."""
        self.automatic_optimization = False
        self.norm_layers = batch_norm_layers(self.network)

    def on_train_start(self) -> None:
        super().on_train_start()
        reset_running_statistics(self.norm_layers)

    def configure_optimizers(self):
        return None

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self.network.train()
        with torch.no_grad():
            self(batch["image"])
