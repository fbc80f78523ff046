"""Class-marginal priors: the target distribution a method pulls predictions' marginal towards."""

from __future__ import annotations

import torch


def uniform_prior(num_classes: int) -> torch.Tensor:
    """``(C,)`` uniform distribution, the implicit target of information maximisation."""
    return torch.full((num_classes,), 1.0 / num_classes)


def class_marginal(probs: torch.Tensor) -> torch.Tensor:
    """Mean prediction ``(N, C) -> (C,)``: the model's estimate of the class marginal."""
    return probs.float().mean(dim=0)


def estimated_prior(probs: torch.Tensor, smoothing: float = 1e-3) -> torch.Tensor:
    """Label-free prior estimated from (source-model) predictions on target: argmax frequencies, smoothed. ``(N, C) -> (C,)``."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float() + smoothing
    return counts / counts.sum()
