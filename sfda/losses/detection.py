"""LPLD's low-confidence pseudo-label distillation (Yoon et al., ECCV 2024). Background is class 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lpl_class_targets(
    teacher_logits: torch.Tensor, min_foreground: float = 0.9, max_background: float = 0.99
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class relations of the teacher for LPL candidates.

    ``teacher_logits (P, C + 1)`` -> (targets ``(P, C + 1)``: the softmax over the foreground classes only,
    with 1e-9 in the background slot 0; keep ``(P,)``: the largest foreground relation is at least
    ``min_foreground`` and the full softmax's background probability at most ``max_background``).
    """
    logits = teacher_logits.float()
    relation = logits[:, 1:].softmax(dim=1)
    background = logits.softmax(dim=1)[:, 0]
    keep = (relation.max(dim=1).values >= min_foreground) & (background <= max_background)
    targets = torch.cat([relation.new_full((len(relation), 1), 1e-9), relation], dim=1)
    return targets, keep


def lpld_distillation(
    targets: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_features: torch.Tensor,
    student_features: torch.Tensor,
) -> torch.Tensor:
    """``mean_j w_j KL(t_j || softmax(z_S,j))`` with ``w_j = 1 - cos(f_S,j, f_T,j)`` (detached).

    Shapes: targets and student_logits ``(M, C + 1)``, features ``(M, D)``; ``M = 0`` gives 0 with a graph.
    """
    if len(targets) == 0:
        return student_logits.sum() * 0.0
    log_p = student_logits.float().log_softmax(dim=1)
    kl = (targets * (targets.log() - log_p)).sum(dim=1)
    weight = 1.0 - F.cosine_similarity(student_features.float(), teacher_features.float(), dim=1).detach()
    return (weight * kl).mean()
