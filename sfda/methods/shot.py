"""SHOT (Liang et al., ICML 2020): information maximisation + self-supervised centroid pseudo-labels;
SHOT-O, its open-set variant (2-means on entropy separates unknown samples)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import masked_information_maximization
from ..models import SourceModel
from ..pseudo_labels import centroid_labels, entropy_2means_threshold, masked_global_mean, normalised_entropy
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim


class SHOT(Adaptation):
    """Per step ``L = beta * CE(logits, yhat) + IM(p)``; ``yhat`` from SHOT's centroid labelling
    on a full eval pass over the target set at every epoch start. ``beta = 0`` is SHOT-IM.

    SHOT-O (``open_set: true``): at each pass, 2-means on the normalised entropy (centres
    from 0 and 1) gives a threshold; samples above it are unknown: they get no pseudo-label,
    take no part in the CE or IM terms, and centroids are built from the known samples only.
    At evaluation a sample above the latest threshold is predicted unknown. (The official
    code re-runs the 2-means on the test set at test time; here the threshold comes from the
    unlabelled training pass, so a prediction does not depend on the other test samples.)

    Under DDP the IM marginal is taken over the global batch, so the loss does not depend on
    the number of processes.

    Args:
        source, optim, evaluate_source, reject_unknown: see ``Adaptation``.
        beta: weight of the pseudo-label CE (spec: 0.3; official digit script 0.1; 0 = SHOT-IM).
        im_weight: weight of the IM term (official ``ent_par`` 1.0).
        rounds: centroid assignment rounds (2).
        min_count: minimum source-argmax count for a class to get centroids (0).
        open_set: SHOT-O (see above).
    """

    tasks = ("classification",)
    UNKNOWN = -2  # pseudo-label of a sample SHOT-O set aside as unknown

    def __init__(self, source: SourceModel, beta: float = 0.3, im_weight: float = 1.0, rounds: int = 2,
                 min_count: int = 0, optim: Optim | None = None, evaluate_source: bool = True,
                 open_set: bool = False, reject_unknown: float | None = None):
        for name, value in (("beta", beta), ("im_weight", im_weight), ("min_count", min_count)):
            if value < 0:
                raise ValueError(f"model.{name}: expected a value >= 0 (0 switches the term off), "
                                 f"got {value}")
        if rounds < 1:
            raise ValueError(f"model.rounds: expected at least 1 centroid round, got {rounds}")
        super().__init__(source, optim, freeze_head=True, evaluate_source=evaluate_source,
                         reject_unknown=reject_unknown)
        if open_set and reject_unknown is not None:
            raise ValueError("model.reject_unknown: SHOT-O (open_set: true) sets its own threshold by "
                             "2-means; leave it null")
        self.beta, self.im_weight = beta, im_weight
        self.rounds, self.min_count, self.open_set = rounds, min_count, open_set
        # SHOT-O's rejection threshold is part of the adapted model (used at test and predict)
        self.register_buffer("entropy_threshold", torch.tensor(-1.0), persistent=True)  # -1: not computed yet

    def build_state(self, num_samples: int) -> None:
        self.register_buffer("pseudo_labels", torch.full((num_samples,), -1, dtype=torch.long),
                             persistent=True)

    def unknown_threshold(self) -> float | None:
        if self.open_set and float(self.entropy_threshold) >= 0:
            return float(self.entropy_threshold)
        return super().unknown_threshold()

    def on_train_epoch_start(self) -> None:
        if self.beta == 0 and not self.open_set:
            return
        with self.stopwatch("engine"):
            rows = self.full_pass(self.trainer.datamodule.bank_dataloader(), "SHOT pseudo-labels")
            known = torch.ones(len(rows["index"]), dtype=torch.bool, device=rows["probs"].device)
            if self.open_set:
                threshold = entropy_2means_threshold(rows["probs"])
                self.entropy_threshold.fill_(threshold)
                known = normalised_entropy(rows["probs"]) <= threshold
            labels = torch.full_like(rows["index"], self.UNKNOWN)
            if bool(known.all()):  # closed set: the rows as they are, not a masked copy of every feature
                labels = centroid_labels(rows["features"], rows["probs"], self.rounds, self.min_count)
            elif known.any():
                labels[known] = centroid_labels(rows["features"][known], rows["probs"][known], self.rounds,
                                                self.min_count)
        self.pseudo_labels[rows["index"]] = labels.to(self.pseudo_labels.device)
        self.log("engine/pseudo_label_changed_vs_argmax",
                 (labels[known] != rows["probs"][known].argmax(1)).float().mean())
        if self.open_set:
            self.log_dict({"engine/unknown_fraction": 1 - known.float().mean(),
                           "engine/entropy_threshold": self.entropy_threshold})

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, logits = self(batch["image"], batch["index"])
        probs = logits.float().softmax(dim=1)
        targets = self.pseudo_labels[batch["index"]]
        known = targets != self.UNKNOWN if self.open_set else torch.ones_like(targets, dtype=torch.bool)
        im = masked_information_maximization(probs, known)
        loss = self.im_weight * im
        if self.beta > 0:
            ce = F.cross_entropy(logits.float(), targets.clamp(min=0), reduction="none")
            loss = loss + self.beta * masked_global_mean(ce, known)
        self.log_dict({"train/loss": loss, "train/im": im}, prog_bar=True)
        return loss
