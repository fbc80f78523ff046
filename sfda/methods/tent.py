"""Tent (Wang et al., ICLR 2021): entropy minimisation of BatchNorm affine parameters."""

from __future__ import annotations

import torch

from ..losses import mean_entropy
from ..models import SourceModel
from ..models.norm import batch_norm_layers, use_batch_statistics
from .base import AdaptationModule, Optim


class Tent(AdaptationModule):
    """Only BatchNorm scale/shift train; BatchNorm always normalises with the current batch's
    statistics (running statistics are dropped, as in the official ``configure_model``).

    Deviation: evaluation runs in eval mode, so dropout is off when predicting (the official
    code keeps the whole model in train mode).

    Args:
        source, evaluate_source: see AdaptationModule.
        optim: Tent's digit/CIFAR setting: Adam, lr 1e-3, no decay, constant lr.
    """

    def __init__(self, source: SourceModel, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(source, optim or Optim(name="adam", lr=1e-3, weight_decay=0.0, power=0.0,
                                                backbone_lr_mult=1.0),
                         freeze_head=True, evaluate_source=evaluate_source)
        self.network.requires_grad_(False)
        self.norm_layers = batch_norm_layers(self.network)
        for bn in self.norm_layers:
            bn.requires_grad_(True)

    def on_train_start(self) -> None:
        super().on_train_start()  # source-only accuracy with the source's running statistics
        use_batch_statistics(self.norm_layers)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        # a resumed or tested Tent model normalises with batch statistics
        use_batch_statistics(self.norm_layers)

    def parameter_groups(self) -> list[dict]:
        return [{"params": [p for bn in self.norm_layers for p in bn.parameters()], "lr": self.optim.lr}]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, logits = self(batch["image"], batch["index"])
        loss = mean_entropy(logits.float().softmax(dim=1))
        self.log("train/entropy", loss, prog_bar=True)
        return loss
