"""Entropy and information maximisation (SHOT, SHOT-IM, Tent)."""

from __future__ import annotations

import torch

from ..pseudo_labels import entropy, gather_rows, gather_with_grad, masked_global_mean


def mean_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean per-sample entropy of ``probs`` ``(B, C)``: Tent's loss, IM's first term."""
    return entropy(probs).mean()


def information_maximization(probs: torch.Tensor, marginal_probs: torch.Tensor | None = None) -> torch.Tensor:
    """IM loss ``mean_i H(p_i) - H(mean_i p_i)``: confident yet diverse predictions.

    Args:
        probs: ``(B, C)`` softmax of the local batch (entropy term).
        marginal_probs: ``(B', C)`` rows whose mean is the marginal (the global batch under
            DDP, see ``gather_with_grad``); defaults to ``probs``.
    """
    marginal = (probs if marginal_probs is None else marginal_probs).mean(dim=0)
    diversity = -(marginal * torch.log(marginal + 1e-5)).sum()
    return mean_entropy(probs) - diversity


def masked_information_maximization(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """IM over the rows of the GLOBAL batch where ``mask`` holds (SHOT-O: known samples only).

    ``probs (B, C)`` and ``mask (B,)`` are this process's share; the marginal is gathered over
    processes and the entropy term is scaled so that, after DDP averages gradients, the update
    equals that of one process on the whole batch. All-true ``mask``: ``information_maximization``.
    """
    all_probs, all_mask = gather_with_grad(probs), gather_rows(mask.float())
    count = all_mask.sum().clamp(min=1.0)
    conditional = masked_global_mean(entropy(probs), mask)
    marginal = (all_probs * all_mask[:, None]).sum(0) / count
    return conditional + (marginal * torch.log(marginal + 1e-5)).sum()


def soft_cross_entropy(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``mean_i -sum_c targets_ic log probs_ic``: CE to soft targets ``(B, C)`` (GLC's pseudo-label and kNN
    terms)."""
    return -(targets * torch.log(probs + eps)).sum(dim=1).mean()
