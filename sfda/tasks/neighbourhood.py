"""The base of the neighbourhood methods (NRC, AaD, GLC; classification): feature and score banks of every
target sample, and their nearest neighbours."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..pseudo_labels import KnnBackend, TargetBank, cosine_knn
from .adaptation import Adaptation


class NeighbourhoodMethod(Adaptation):
    """Keeps a TargetBank of L2-normalised features and softmax scores for all N samples.

    Filled by one eval pass before training (unless restored from a checkpoint); every step
    first writes the current batch's detached rows (gathered from all processes), then
    finds each sample's K nearest bank neighbours by cosine, self excluded (``bank_neighbours``,
    with the subclass's ``knn_backend``).
    """

    tasks = ("classification",)
    k: int
    knn_backend: KnnBackend = "auto"
    # a subclass that rewrites the whole bank at every epoch start skips the initial fill
    refresh_bank_each_epoch = False

    neighbour_counts = ("k",)  # constructor arguments that are neighbour counts in the bank

    def build_state(self, num_samples: int) -> None:
        for name in self.neighbour_counts:
            value = getattr(self, name)
            if not 1 <= value < num_samples:
                raise ValueError(f"model.{name}: expected a neighbour count in [1, {num_samples - 1}] for a "
                                 f"target set of {num_samples} samples, got {value}")
        self.bank = TargetBank(num_samples, {"features": self.task.feature_dim, "scores": self.num_classes})

    def on_train_start(self) -> None:
        super().on_train_start()
        if not self.bank.is_full() and not self.refresh_bank_each_epoch:
            self.write_bank(self.full_pass(self.trainer.datamodule.bank_dataloader(), "filling banks",
                                           phase="bank_fill"))

    def write_bank(self, rows: dict[str, torch.Tensor]) -> None:
        """Store a full pass (``full_pass`` output, identical on every rank) in the bank."""
        self.bank.write(rows["index"], synchronise=False, features=F.normalize(rows["features"], dim=1),
                        scores=rows["probs"])

    def step_neighbours(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward, bank write-back and kNN. Returns ``probs (B, C)``, normalised ``features (B, D)``,
        neighbour indices ``(B, K)``."""
        features, logits = self(batch["image"], batch["index"])
        probs = logits.float().softmax(dim=1)
        features = F.normalize(features.float(), dim=1)
        with torch.no_grad(), self.stopwatch("engine"):
            self.bank.write(batch["index"], features=features, scores=probs)
            near = self.bank_neighbours(features, self.k, batch["index"])
        return probs, features, near

    def bank_neighbours(self, queries: torch.Tensor, k: int, query_index: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, k)`` of the bank features most cosine-similar to ``queries``, each query's own row
        ``query_index`` excluded, found with the method's ``knn_backend``. The bank's rows are unit length
        (written normalised), and so must ``queries`` be."""
        bank = self.bank.features
        return cosine_knn(queries, bank, k, query_index=query_index, backend=self.knn_backend,
                          normalised=True)[1]
