"""Neighbourhood losses on banks of scores (NRC, AaD)."""

from __future__ import annotations

import torch


def weighted_neighbour_affinity(probs: torch.Tensor, neighbour_scores: torch.Tensor,
                                weights: torch.Tensor) -> torch.Tensor:
    """``-(1/B) sum_i sum_j w_ij <s_j, p_i>``.

    Args:
        probs: ``(B, C)`` current predictions p_i (with gradient).
        neighbour_scores: ``(B, K, C)`` bank scores s_j of each sample's neighbours.
        weights: ``(B, K)`` affinity weights w_ij.
    """
    affinity = torch.einsum("bkc,bc->bk", neighbour_scores, probs)
    return -(weights * affinity).sum(dim=1).mean()


def attract_disperse(probs: torch.Tensor, neighbour_scores: torch.Tensor, batch_probs: torch.Tensor,
                     alpha: float) -> torch.Tensor:
    """AaD: ``-(1/B) sum_i sum_{j in N_K(i)} <s_j, p_i> + alpha (1/B) sum_i sum_{m != i} <p_i, p_m>``.

    Args:
        probs: ``(B, C)`` local predictions (with gradient).
        neighbour_scores: ``(B, K, C)`` bank scores of the K nearest neighbours.
        batch_probs: ``(B', C)`` the predictions the dispersion runs over (the global batch
            under DDP, containing ``probs``); B' = B on one process.
        alpha: dispersion weight at this step.
    """
    attract = -torch.einsum("bkc,bc->b", neighbour_scores, probs).mean()
    # sum over m != i of <p_i, p_m> = <p_i, sum_m p_m> - <p_i, p_i>
    total = batch_probs.sum(dim=0)
    disperse = ((probs * total).sum(dim=1) - (probs * probs).sum(dim=1)).mean()
    return attract + alpha * disperse
