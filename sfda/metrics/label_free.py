"""Label-free scores of an evaluation pass: every validator of ``validators`` whose inputs were given."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..pseudo_labels import one_row_per_index
from .validators import label_free_figures

OPTIONAL_INPUTS = ("features", "strong", "teacher")


class LabelFreeScores(Metric):
    """Accumulates predictions ``probs (B, C)`` with their sample ``index (B,)`` and, where given,
    ``features (B, D)``, strong-view predictions ``strong (B, C)`` and EMA-teacher predictions
    ``teacher (B, C)``; ``compute`` returns ``{validator name: score}`` (``validators.VALIDATORS``) and
    ``marginal_entropy`` (``validators.marginal_entropy``).

    States are gathered across processes by torchmetrics; rows repeated by a padded distributed
    sampler are dropped by index, so the scores do not depend on the number of processes.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        for name in OPTIONAL_INPUTS:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, probs: torch.Tensor, index: torch.Tensor | None = None, **optional: torch.Tensor | None
    ) -> None:
        """``optional``: ``features``, ``strong``, ``teacher`` (each ``(B, ...)``), or None."""
        if index is None:  # one process without sample ids: rows are taken as distinct (pass index under DDP)
            seen = sum(int(p.shape[0]) for p in self.probs)
            index = torch.arange(seen, seen + probs.shape[0], device=probs.device)
        self.index.append(index.detach().long())
        self.probs.append(probs.detach().float())
        for name, value in optional.items():
            if name not in OPTIONAL_INPUTS:
                raise TypeError(
                    f"LabelFreeScores.update: unknown input '{name}', expected one of {OPTIONAL_INPUTS}"
                )
            if value is not None:
                getattr(self, name).append(value.detach().float())

    def compute(self) -> dict[str, torch.Tensor]:
        index, probs = concatenated(self.index), concatenated(self.probs)
        if probs is None:
            return {}
        keep = one_row_per_index(index)
        tensors = {"probs": probs[keep]}
        for name in OPTIONAL_INPUTS:
            rows = concatenated(getattr(self, name))
            if rows is not None and rows.shape[0] == index.shape[0]:  # given for every batch
                tensors[name] = rows[keep]
        return label_free_figures(tensors)


def concatenated(state) -> torch.Tensor | None:
    """A list state (one process) or its gathered tensor (after a DDP sync) as one tensor; None when empty."""
    if isinstance(state, list):
        return dim_zero_cat(state) if state else None
    return state if state.numel() else None
