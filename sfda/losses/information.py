"""Entropy and information maximisation (SHOT, SHOT-IM, Tent)."""

from __future__ import annotations

import torch

from ..pseudo_labels import entropy


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
