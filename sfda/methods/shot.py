"""SHOT (Liang et al., ICML 2020): information maximisation + self-supervised centroid pseudo-labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import information_maximization
from ..models import ExternalModel
from ..pseudo_labels import centroid_labels, gather_with_grad
from .base import AdaptationModule, Optim


class SHOT(AdaptationModule):
    """Per step ``L = beta * CE(logits, yhat) + IM(p)``; ``yhat`` from SHOT's centroid labelling
    on a full eval pass over the target set at every epoch start. ``beta = 0`` is SHOT-IM.

    Under DDP the IM marginal is taken over the global batch, so the loss does not depend on
    the number of processes.

    Args:
        source, optim, evaluate_source: see AdaptationModule.
        beta: weight of the pseudo-label CE (spec: 0.3; official digit script 0.1; 0 = SHOT-IM).
        im_weight: weight of the IM term (official ``ent_par`` 1.0).
        rounds: centroid assignment rounds (2).
        min_count: minimum source-argmax count for a class to get centroids (0).
    """

    def __init__(self, source: str | ExternalModel, beta: float = 0.3, im_weight: float = 1.0, rounds: int = 2,
                 min_count: int = 0, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(source, optim, freeze_head=True, evaluate_source=evaluate_source)
        self.beta, self.im_weight, self.rounds, self.min_count = beta, im_weight, rounds, min_count

    def build_state(self, num_samples: int) -> None:
        self.register_buffer("pseudo_labels", torch.full((num_samples,), -1, dtype=torch.long), persistent=True)

    def on_train_epoch_start(self) -> None:
        if self.beta == 0:
            return
        with self.stopwatch("engine"):
            rows = self.full_pass(self.trainer.datamodule.bank_dataloader(), "SHOT pseudo-labels")
            labels = centroid_labels(rows["features"], rows["probs"], self.rounds, self.min_count)
        self.pseudo_labels[rows["index"]] = labels.to(self.pseudo_labels.device)
        self.log("engine/pseudo_label_changed_vs_argmax", (labels != rows["probs"].argmax(1)).float().mean())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, logits = self(batch["image"])
        probs = logits.float().softmax(dim=1)
        im = information_maximization(probs, gather_with_grad(probs))
        loss = self.im_weight * im
        if self.beta > 0:
            loss = loss + self.beta * F.cross_entropy(logits.float(), self.pseudo_labels[batch["index"]])
        self.log_dict({"train/loss": loss, "train/im": im}, prog_bar=True)
        return loss
