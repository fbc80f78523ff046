"""Segmentation SFDA losses (Bateson et al. AdaEnt / AdaMI): weighted entropy and a class-ratio prior KL.

Shapes: ``probs (B, C, *spatial)`` softmax outputs; ratios and priors ``(B, C)``.
"""

from __future__ import annotations

from typing import Literal

import torch

EPS = 1e-10
KLDirection = Literal["adami", "adaent"]


def weighted_entropy(probs: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """``-(1 / (B |Omega|)) sum_{b,i,k} nu_k p_bik log(p_bik + eps)``; ``class_weights (C,)`` = nu."""
    weights = class_weights.to(probs).view(1, -1, *([1] * (probs.dim() - 2)))
    return -(weights * probs * torch.log(probs + EPS)).sum(dim=1).mean()


def predicted_class_ratio(probs: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``tau_hat (B, C)``: per image, ``sum_i (p_ik / max_c p_ic)^power`` normalised over classes.
    Dividing by the per-pixel maximum sharpens the size estimate (spec)."""
    sharpened = (probs / probs.max(dim=1, keepdim=True).values.clamp_min(EPS)) ** power
    sizes = sharpened.flatten(2).sum(dim=2)
    return sizes / sizes.sum(dim=1, keepdim=True).clamp_min(EPS)


def class_ratio_kl(ratio: torch.Tensor, prior: torch.Tensor,
                   direction: KLDirection = "adami") -> torch.Tensor:
    """Mean over images of ``KL(ratio || prior)`` ('adami', the journal version) or
    ``KL(prior || ratio)`` ('adaent', MICCAI 2020); both ``(B, C)``. A class with prior 0 is
    pushed to size 0 (adami) and contributes nothing (adaent)."""
    prior = prior.to(ratio)
    p, q = (ratio, prior) if direction == "adami" else (prior, ratio)
    return (p * (torch.log(p + EPS) - torch.log(q + EPS))).sum(dim=1).mean()
