"""NRC (Yang et al., NeurIPS 2021): neighbourhood reciprocity clustering."""

from __future__ import annotations

import torch

from ..losses import weighted_neighbour_affinity
from ..models import SourceModel
from ..pseudo_labels import KnnBackend, check_knn_backend, gather_with_grad
from ..tasks.neighbourhood import NeighbourhoodMethod
from ..tasks.optim import Optim


class NRC(NeighbourhoodMethod):
    """``L = -sum_j w_ij <s_j, p_i> - 0.1 sum_m <s_m, p_i> + sum_c pbar_c log pbar_c``.

    w_ij = number of times i is among j's KK nearest neighbours (reciprocal), else 0.1;
    expanded neighbours m (the KK neighbours of each j) weigh 0.1. The spec's dot products
    replace the official ``F.kl_div(probs, scores)`` (same gradient; the official call
    passes probabilities where log-probabilities are expected).

    Args:
        k, kk: neighbours and expanded neighbours (VisDA: 5, 5; Office-Home: 3, 2).
        expanded_weight: weight of expanded neighbours and non-reciprocal ones (0.1).
        knn_backend: bank kNN by "torch", "faiss" or "auto" (faiss where installed and measured faster).
    """

    neighbour_counts = ("k", "kk")

    def __init__(self, source: SourceModel, k: int = 5, kk: int = 5, expanded_weight: float = 0.1,
                 optim: Optim | None = None, evaluate_source: bool = True, knn_backend: KnnBackend = "auto"):
        super().__init__(source, optim, freeze_head=True, evaluate_source=evaluate_source)
        self.k, self.kk, self.expanded_weight = k, kk, expanded_weight
        self.knn_backend = check_knn_backend(knn_backend)

    @torch.no_grad()
    def expanded_neighbours(self, near: torch.Tensor,
                            index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The neighbours' own ``kk`` bank neighbours. ``near (B, K)`` bank rows of the batch's neighbours,
        ``index (B,)`` the batch's rows -> reciprocity weights ``(B, K)`` (how often the sample is among
        neighbour j's kk, else ``expanded_weight``) and the expanded neighbours' scores ``(B, K*kk, C)``."""
        b, k = near.shape
        near_near = self.bank_neighbours(self.bank.features[near.reshape(-1)], self.kk, near.reshape(-1))
        near_near = near_near.view(b, k, self.kk)
        reciprocal = (near_near == index.view(b, 1, 1)).sum(-1).float()
        weights = torch.where(reciprocal > 0, reciprocal, torch.full_like(reciprocal, self.expanded_weight))
        return weights, self.bank.scores[near_near.view(b, -1)].view(b, k * self.kk, -1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        probs, _, near = self.step_neighbours(batch)
        with self.stopwatch("engine"):
            weights, expanded = self.expanded_neighbours(near, batch["index"])
        bank_scores = self.bank.scores
        loss = weighted_neighbour_affinity(probs, bank_scores[near], weights)
        loss = loss + weighted_neighbour_affinity(probs, expanded,
                                                  torch.full(expanded.shape[:2], self.expanded_weight,
                                                             device=probs.device))
        marginal = gather_with_grad(probs).mean(dim=0)
        loss = loss + (marginal * torch.log(marginal + 1e-5)).sum()
        self.log("train/loss", loss, prog_bar=True)
        return loss
