"""AaD (Yang et al., NeurIPS 2022): attracting and dispersing."""

from __future__ import annotations

import torch

from ..losses import attract_disperse
from ..models import SourceModel
from ..pseudo_labels import KnnBackend, check_knn_backend, gather_with_grad
from ..tasks.neighbourhood import NeighbourhoodMethod
from ..tasks.optim import Optim


class AaD(NeighbourhoodMethod):
    """Attract each prediction to its K bank neighbours' scores, disperse it from the other
    predictions of the (global) batch, with weight alpha_t = alpha (1 + 10 t/T)^-beta.

    Args:
        k: neighbours (VisDA 5, Office 3).
        alpha, beta: dispersion weight and its decay exponent (VisDA: 1, 5; Office-31: 1, 1).
        knn_backend: bank kNN by "torch", "faiss" or "auto" (faiss where installed and measured faster).
    """

    def __init__(self, source: SourceModel, k: int = 5, alpha: float = 1.0, beta: float = 5.0,
                 optim: Optim | None = None, evaluate_source: bool = True, knn_backend: KnnBackend = "auto"):
        super().__init__(source, optim, freeze_head=True, evaluate_source=evaluate_source)
        self.k, self.alpha, self.beta = k, alpha, beta
        self.knn_backend = check_knn_backend(knn_backend)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        probs, _, near = self.step_neighbours(batch)
        progress = self.global_step / max(1, int(self.trainer.estimated_stepping_batches))
        alpha_t = self.alpha * (1 + 10 * progress) ** (-self.beta)
        loss = attract_disperse(probs, self.bank.scores[near], gather_with_grad(probs), alpha_t)
        self.log_dict({"train/loss": loss, "train/alpha": alpha_t}, prog_bar=True)
        return loss
