"""Tent (Wang et al., ICLR 2021): entropy minimisation of the BatchNorm affine parameters, for every task
whose predictions are class probabilities (classification, segmentation)."""

from __future__ import annotations

import torch

from ..models import SourceModel
from ..models.norm import batch_norm_layers, use_batch_statistics
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim


class Tent(Adaptation):
    """Only BatchNorm scale/shift train, on the mean entropy of the predictions (per sample, or per voxel
    for segmentation); BatchNorm always normalises with the current batch's statistics (running statistics
    are dropped, as in the official ``configure_model``), at evaluation too.

    Deviation: evaluation runs in eval mode, so dropout is off when predicting (the official code keeps the
    whole model in train mode). For segmentation, evaluation normalises with the statistics of each
    inference batch (32 consecutive slices), which differ strongly along a head: measured to hurt on the
    demo volumes.

    Args:
        source, evaluate_source: see ``Adaptation``.
        optim: Tent's digit/CIFAR setting: Adam, lr 1e-3, no decay, constant lr.
    """

    tasks = ("classification", "segmentation")

    def __init__(self, source: SourceModel, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(source, optim or Optim(name="adam", lr=1e-3, weight_decay=0.0, power=0.0,
                                                backbone_lr_mult=1.0),
                         evaluate_source=evaluate_source)
        self.network.requires_grad_(False)
        self.norm_layers = batch_norm_layers(self.network)
        if not self.norm_layers:
            raise ValueError(f"model.source: Tent trains BatchNorm scale and shift, but the {self.task.name} "
                             f"network ({type(self.network).__name__}) has no BatchNorm layer")
        for bn in self.norm_layers:
            bn.requires_grad_(True)

    def on_train_start(self) -> None:
        super().on_train_start()  # the source model's scores with its running statistics
        use_batch_statistics(self.norm_layers)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        use_batch_statistics(self.norm_layers)  # a resumed or tested Tent model uses batch statistics

    def parameter_groups(self) -> list[dict]:
        return [{"params": [p for bn in self.norm_layers for p in bn.parameters()], "lr": self.optim.lr}]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.task.mean_entropy(self(batch["image"], batch["index"]))
        self.log("train/entropy", loss, prog_bar=True)
        return loss
