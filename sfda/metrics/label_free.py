"""Label-free selection scores: mean entropy, IM and SND, computed without any target label."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..losses import information_maximization
from ..pseudo_labels import entropy


def soft_neighbourhood_density(probs: torch.Tensor, temperature: float = 0.05, chunk_size: int = 2048) -> torch.Tensor:
    """SND (Saito et al., 2021): mean entropy of each sample's softmax over its scaled cosine
    similarities to all other samples' predictions. Higher = denser neighbourhoods. ``(N, C) -> ()``."""
    if probs.shape[0] < 2:
        return probs.new_tensor(float("nan"))
    normed = F.normalize(probs.float(), dim=1)
    total = normed.new_zeros(())
    for start in range(0, normed.shape[0], chunk_size):
        sims = normed[start : start + chunk_size] @ normed.T / temperature
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -float("inf")  # exclude self
        total = total + entropy(sims.softmax(dim=1)).sum()
    return total / normed.shape[0]


class LabelFreeScores(Metric):
    """Accumulates predictions ``(B, C)`` and computes ``{"entropy", "im", "snd"}``.

    - entropy: mean prediction entropy (lower = more confident).
    - im: mean entropy minus marginal entropy (lower = confident and diverse).
    - snd: soft neighbourhood density (higher = better, per Saito et al.).
    States are gathered across processes by torchmetrics before ``compute``.
    """

    full_state_update = False

    def __init__(self, temperature: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.add_state("probs", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor) -> None:
        self.probs.append(probs.detach().float())

    def compute(self) -> dict[str, torch.Tensor]:
        probs = dim_zero_cat(self.probs)
        return {
            "entropy": entropy(probs).mean(),
            "im": information_maximization(probs),
            "snd": soft_neighbourhood_density(probs, self.temperature),
        }
