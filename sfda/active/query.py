"""Query strategies: a score per still-unlabelled sample, the LOWEST scores are queried.

All functions take the pool's rows only and are pure torch (identical on every process,
since the pool's probabilities come from a gathered full pass)."""

from __future__ import annotations

import torch

from ..pseudo_labels import entropy

QUERY_STRATEGIES = ("contrastive", "random", "entropy", "margin")


def margin(probs: torch.Tensor) -> torch.Tensor:
    """``(N, C) -> (N,)`` top-1 minus top-2 probability."""
    top = probs.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def margin_scores(probs: torch.Tensor) -> torch.Tensor:
    """Margin sampling: the smallest margins are queried."""
    return margin(probs)


def entropy_scores(probs: torch.Tensor) -> torch.Tensor:
    """Entropy sampling: the highest entropies are queried (score = -entropy)."""
    return -entropy(probs)


def random_scores(num_samples: int, seed: int, round_index: int) -> torch.Tensor:
    """Random sampling, seeded by (run seed, round) so a resumed run queries the same samples."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + round_index)
    return torch.rand(num_samples, generator=generator)


def contrastive_scores(probs: torch.Tensor, previous: torch.Tensor, alpha: float = 0.03, kappa: int = 100,
                       balance: float = 0.1) -> torch.Tensor:
    """LFTL's Contrastive Active Sampling score ``(N,)`` (lowest = query first).

    ``u = p + alpha (p - p_prev)`` contrasts the current model with the previous round's;
    ``U = top1(u) - top2(u)``. The ``kappa`` samples with the largest ``U`` vote with their
    argmax-p class, ``w_c = count_c / max count``, and ``U <- U / max U + balance * w_{argmax p}``,
    so classes the model is already sure about are queried less.

    Args:
        probs: ``(N, C)`` current probabilities of the pool.
        previous: ``(N, C)`` the previous round's probabilities of the same samples (round 1: ``probs``).
        alpha, kappa, balance: the spec's alpha (0.03), kappa (100 Office, 500 VisDA) and lambda (0.1).
    """
    u = probs + alpha * (probs - previous)
    scores = margin(u)
    predicted = probs.argmax(dim=1)
    confident = scores.topk(min(kappa, len(scores))).indices
    counts = torch.bincount(predicted[confident], minlength=probs.shape[1]).float()
    weights = counts / counts.max().clamp(min=1.0)
    return scores / scores.max().clamp(min=1e-12) + balance * weights[predicted]


def query_lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Positions ``(count,)`` of the ``count`` lowest scores, ties broken by position (stable)."""
    if count > len(scores):
        raise ValueError(f"cannot query {count} samples from a pool of {len(scores)}")
    return torch.sort(scores, stable=True).indices[:count]
