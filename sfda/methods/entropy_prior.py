"""Entropy minimisation with a class-ratio prior (Bateson et al., AdaEnt MICCAI 2020 / AdaMI MedIA 2022)."""

from __future__ import annotations

import torch

from ..losses import class_ratio_kl, predicted_class_ratio, weighted_entropy
from ..losses.segmentation import KLDirection
from ..models import SourceModel
from ..pseudo_labels import PriorProvider, class_fractions
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim

PAPER_CLASS_WEIGHTS = {2: [0.1, 0.9], 5: [0.02, 0.27, 0.18, 0.21, 0.32]}


class EntropyPrior(Adaptation):
    """``L = L_ent(nu) + lambda KL(tau_hat || tau_e)`` on target samples; the whole network trains.

    ``tau_e`` per sample comes from a prior provider (engine ``pseudo_labels.priors``), resolved
    once at fit start into a ``(N, C)`` table keyed by global sample index (kept in checkpoints):
    ``ConstantSizes`` (anatomical sizes + image-level tags, from a CSV, a callable or, label-free,
    the source model's predictions), ``ImageSizes`` (per-image CSV),
    ``SourceEstimate`` (label-free, from the source model's predictions) or ``TrueSizes``
    (upper bound from target labels, named as such). ``prior: null`` is entropy minimisation alone.

    Args:
        source: segmentation source artifact.
        prior: the prior provider; None: no prior term.
        prior_weight: lambda (paper: 1).
        class_weights: nu per class; default the paper's ([0.1, 0.9] for 2 classes, the heart
            weights for 5); other class counts must set it.
        kl_direction: 'adami' = KL(tau_hat || tau_e) (journal version, default) or
            'adaent' = KL(tau_e || tau_hat).
        ratio_power: pi of the sharpened size estimate (paper: 1).
        optim: Adam, wd 1e-4, lr x0.9 every 20 epochs; lr 1e-6 as the official adaptation default.
        evaluate_source: see ``Adaptation``.
    """

    tasks = ("segmentation",)

    def __init__(self, source: SourceModel, prior: PriorProvider | None = None, prior_weight: float = 1.0,
                 class_weights: list[float] | None = None, kl_direction: KLDirection = "adami",
                 ratio_power: float = 1.0, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(source, optim or Optim(name="adam", lr=1e-6, weight_decay=1e-4, backbone_lr_mult=1.0,
                                                step_epochs=20, step_factor=0.9), evaluate_source)
        weights = class_weights if class_weights is not None else PAPER_CLASS_WEIGHTS.get(self.num_classes)
        if weights is None or len(weights) != self.num_classes:
            raise ValueError(f"model.class_weights: expected {self.num_classes} weights (one per class "
                             f"{self.class_names}), got {weights}")
        if kl_direction not in ("adami", "adaent"):
            raise ValueError(f"model.kl_direction: expected 'adami' or 'adaent', got '{kl_direction}'")
        self.register_buffer("class_weights", torch.tensor(weights, dtype=torch.float))
        self.prior, self.prior_weight = prior, prior_weight
        self.kl_direction, self.ratio_power = kl_direction, ratio_power

    def build_state(self, num_samples: int) -> None:
        if self.prior is not None:
            self.register_buffer("prior_table", torch.full((num_samples, self.num_classes), float("nan"),
                                                           device=self.device))

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.prior is not None and self.prior_table.isnan().any():  # not restored from a checkpoint
            self.prior_table.copy_(self.resolve_prior().to(self.prior_table))
            self.results["prior/mean_foreground"] = float(self.prior_table[:, 1:].sum(1).mean())

    def resolve_prior(self) -> torch.Tensor:
        """The provider's ``(N, C)`` table; a pass over the target first when the provider needs one."""
        dm = self.trainer.datamodule
        fractions = None
        if self.prior.needs == "source_predictions":  # the network is still the source model here
            def predicted(batch: dict) -> dict:
                return {"f": class_fractions(self(batch["image"]).argmax(1), self.num_classes)}

            fractions = self.target_pass(dm.bank_dataloader(), predicted, "prior: source predictions")["f"]
        elif self.prior.needs == "true_labels":
            def labelled(batch: dict) -> dict:
                return {"f": class_fractions(batch["label"], self.num_classes)}

            loader = dm.bank_dataloader(with_labels=True)
            fractions = self.target_pass(loader, labelled, "prior: true sizes")["f"]
        table = self.prior.table(dm.sample_ids(), self.class_names, fractions)
        expected = (dm.num_samples("train"), self.num_classes)
        if tuple(table.shape) != expected:
            raise ValueError(f"model.prior ({type(self.prior).__name__}): table of shape "
                             f"{tuple(table.shape)}, expected {expected}")
        return table

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        probs = self(batch["image"]).float().softmax(dim=1)
        loss_entropy = weighted_entropy(probs, self.class_weights)
        self.log("train/entropy", loss_entropy, prog_bar=True)
        if self.prior is None:
            return loss_entropy
        ratio = predicted_class_ratio(probs, self.ratio_power)
        loss_prior = class_ratio_kl(ratio, self.prior_table[batch["index"]], self.kl_direction)
        self.log("train/prior_kl", loss_prior, prog_bar=True)
        return loss_entropy + self.prior_weight * loss_prior
