"""LFTL (Lyu et al., ECCV 2024): source-free active DA by Contrastive Active Sampling and
Visual-Persistence-guided Adaptation."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..active import Annotator, Budget
from ..losses import anchor_entropy, masked_information_maximization, mixup_batch, soft_cross_entropy
from ..models import SourceModel
from ..pseudo_labels import TargetBank, gather_rows
from ..tasks.optim import Optim
from .active import ActiveAdaptation, Query


class LFTL(ActiveAdaptation):
    """Per step, one unlabelled and one labelled batch:
    ``L = CE(labelled) + im_weight IM(p_u) + vpa_weight mean_u H(softmax(cos(f_u, M) / T))``,
    with ``M`` the anchor memory of labelled features (a TargetBank keyed by global index,
    refreshed at every epoch start as ``M <- 0.1 M + 0.9 f``). After each epoch, mixup steps
    over the labelled set (``Beta(0.75, 0.75)``, ``lam = max(lam, 1 - lam)``, soft-target CE).
    ``query: contrastive`` is LFTL; 'random', 'entropy', 'margin' are the baselines with the
    same adaptation; ``vpa_weight: 0`` is the ablation without visual persistence.

    Under DDP the mixup batch is gathered, mixed with one seeded permutation and ``lam`` per
    step, and split back, so the mixed pairs do not depend on the number of processes.

    Args:
        im_weight: beta_im (0.9). vpa_weight: beta_vpa (1 Office, 10 VisDA). temperature: of the
            cosine softmax (1.0).
        anchor_momentum: weight of the old anchor in the refresh (0.1).
        mixup: run the end-of-epoch mixup pass. mixup_alpha: Beta parameter (0.75).
        (the rest: see ActiveAdaptation)
    """

    def __init__(self, source: SourceModel, budget: Budget | None = None, epochs_per_round: int = 10,
                 query: Query = "contrastive", annotator: Annotator | None = None, im_weight: float = 0.9,
                 vpa_weight: float = 10.0, temperature: float = 1.0, anchor_momentum: float = 0.1,
                 mixup: bool = True, mixup_alpha: float = 0.75, alpha: float = 0.03, kappa: int = 100,
                 balance: float = 0.1, labelled_batch_size: int = 64, optim: Optim | None = None,
                 evaluate_source: bool = True):
        super().__init__(source, budget, epochs_per_round, query, annotator, alpha, kappa, balance,
                         labelled_batch_size, optim or Optim(lr=1e-3), evaluate_source)
        if temperature <= 0:
            raise ValueError(f"model.temperature: expected > 0, got {temperature}")
        self.im_weight, self.vpa_weight, self.temperature = im_weight, vpa_weight, temperature
        self.anchor_momentum, self.mixup, self.mixup_alpha = anchor_momentum, mixup, mixup_alpha

    def build_state(self, num_samples: int) -> None:
        super().build_state(num_samples)
        self.anchors = TargetBank(num_samples, {"features": self.task.feature_dim})

    def uses_mixup(self) -> bool:
        return self.mixup

    def on_labelled(self, chosen: torch.Tensor, rows: dict[str, torch.Tensor]) -> None:
        self.anchors.write(chosen, synchronise=False, features=rows["features"][chosen])

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        index, labels = self.labelled()
        self._anchor_index = index  # the labelled set is fixed within an epoch
        loader = self.trainer.datamodule.subset_dataloader(index.cpu().numpy(), labels.cpu().numpy())
        rows = self.full_pass(loader, "refreshing the anchor memory")
        old = self.anchors.read("features", rows["index"])
        fresh = self.anchor_momentum * old + (1 - self.anchor_momentum) * rows["features"].to(old.device)
        self.anchors.write(rows["index"], synchronise=False, features=fresh)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "mixup" in batch:
            return self.mixup_step(batch["mixup"])
        features, logits = self(batch["unlabelled"]["image"], batch["unlabelled"]["index"])
        _, labelled_logits = self(batch["labelled"]["image"], batch["labelled"]["index"])
        probs = logits.float().softmax(dim=1)
        ce = F.cross_entropy(labelled_logits.float(), batch["labelled"]["label"])
        im = masked_information_maximization(probs,
                                             torch.ones(len(probs), dtype=torch.bool, device=probs.device))
        loss = ce + self.im_weight * im
        logs = {"train/loss": loss, "train/ce": ce, "train/im": im}
        if self.vpa_weight > 0:
            vpa = anchor_entropy(features, self.anchors.read("features", self._anchor_index),
                                 self.temperature)
            loss = loss + self.vpa_weight * vpa
            logs.update({"train/loss": loss, "train/vpa": vpa})
        self.log_dict(logs, prog_bar=True)
        return loss

    def mixup_step(self, batch: dict) -> torch.Tensor:
        """Soft-target CE on a mixup of the GLOBAL labelled batch; this process trains on its share."""
        images, labels = gather_rows(batch["image"]), gather_rows(batch["label"])
        share = len(batch["image"])
        # equal shares: the labelled batch is a multiple of the process count
        offset = self.trainer.global_rank * share
        rng = np.random.default_rng([int(os.environ.get("PL_GLOBAL_SEED", 0)), self.global_step])
        lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
        lam = max(lam, 1 - lam)
        permutation = torch.as_tensor(rng.permutation(len(images)), device=images.device)
        mixed, targets = mixup_batch(images, labels, self.num_classes, lam, permutation)
        _, logits = self(mixed[offset : offset + share])
        loss = soft_cross_entropy(logits.float().softmax(dim=1), targets[offset : offset + share])
        self.log("train/mixup", loss)
        return loss
