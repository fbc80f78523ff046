"""Tent (Wang et al., ICLR 2021): entropy minimisation of the normalisation layers' affine parameters, for
every task whose predictions are class probabilities (classification, segmentation); offline over epochs of
a stored target set, or online on a stream (``sfda.data.stream``)."""

from __future__ import annotations

import torch

from ..models import SourceModel
from ..models.norm import affine_norm_layers, batch_norms, use_batch_statistics
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim


class Tent(Adaptation):
    """Only BatchNorm scale/shift train, on the mean entropy of the predictions (per sample, or per voxel
    for segmentation); BatchNorm always normalises with the current batch's statistics (running statistics
    are dropped, as in the official ``configure_model``), at evaluation too. LayerNorm and GroupNorm
    scale/shift train too (they have no statistics to change): the official code adapts BatchNorm only,
    so a transformer or ConvNeXt could not use it; the test-time-adaptation framework of Döbler et al.
    and SAR adapt these layers the same way. A network with BatchNorm only trains exactly as officially.

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
        self.norm_layers = batch_norms(self.network)
        self.affine_layers = self.norm_layers + affine_norm_layers(self.network)
        if not self.affine_layers:
            raise ValueError(f"model.source: {type(self).__name__} trains normalisation scale and shift, but "
                             f"the {self.task.name} network ({type(self.network).__name__}) has no "
                             "BatchNorm, LayerNorm or GroupNorm layer")
        for layer in self.affine_layers:
            layer.requires_grad_(True)

    def on_train_start(self) -> None:
        super().on_train_start()  # the source model's scores with its running statistics
        use_batch_statistics(self.norm_layers)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        use_batch_statistics(self.norm_layers)  # a resumed or tested Tent model uses batch statistics

    def normalises_with_the_batch(self) -> bool:
        return bool(self.norm_layers)

    def parameter_groups(self) -> list[dict]:
        params = [p for layer in self.affine_layers for p in layer.parameters()]
        return [{"params": params, "lr": self.optim.lr}]

    def adapt_step(self, batch: dict) -> tuple[torch.Tensor, tuple]:
        """Online, the batch is predicted by the forward whose entropy the step then minimises (the official
        ``forward_and_adapt``: predict while adapting)."""
        outputs = self(batch["image"], batch["index"])
        loss = self.task.mean_entropy(outputs)
        self.log("train/entropy", loss, prog_bar=True)
        return loss, outputs
