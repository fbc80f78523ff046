"""BNM (Cui et al., CVPR 2020): batch nuclear-norm maximisation, in its source-free form (head fixed);
the note ``docs/methods/bnm.md`` gives the algorithm, the defaults and the deviations."""

from __future__ import annotations

import torch

from ..models import SourceModel
from ..pseudo_labels import gather_with_grad
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim


class BNM(Adaptation):
    """``L = -||P||_* / B`` for the softmax predictions ``P (B, C)`` of the global batch: a large nuclear
    norm needs confident rows (discriminability) spread over many classes (diversity). The classifier
    head is frozen (hypothesis transfer); the backbone trains at ``optim.backbone_lr_mult`` x lr.

    Deviation: the paper adds the nuclear-norm term to a source cross-entropy; without source data the
    term is the whole loss.

    Args:
        source, optim, evaluate_source: see ``Adaptation``.
        weight: of the nuclear-norm term (paper: 1.0).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, weight: float = 1.0, optim: Optim | None = None,
                 evaluate_source: bool = True):
        if weight <= 0:  # arguments first: a bad value is refused before the source model is read
            raise ValueError(f"model.weight: expected a positive weight, got {weight}")
        super().__init__(source, optim, evaluate_source=evaluate_source, freeze_head=True)
        self.weight = weight

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, logits = self(batch["image"], batch["index"])
        probs = gather_with_grad(logits.float().softmax(dim=1))  # the global batch under DDP
        nuclear = torch.linalg.svdvals(probs).sum() / probs.shape[0]
        loss = -self.weight * nuclear
        self.log("train/nuclear_norm", nuclear, prog_bar=True)
        return loss
