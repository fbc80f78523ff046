"""RoTTA's category-balanced memory bank with timeliness and uncertainty (CSTU; Yuan et al., CVPR 2023,
Sec. 3.3), as fixed-size tensors: a checkpoint holds it, so a resumed run continues with the same bank."""

from __future__ import annotations

import math

import torch
from torch import nn


class CategoryBalancedMemory(nn.Module):
    """At most ``capacity`` samples, each with its pseudo-label (class), uncertainty (prediction entropy), age
    and global stream index. The official ``CSTU`` rules, sample by sample (``add``):

    - every sample has the score ``lambda_t / (1 + exp(-age / capacity)) + lambda_u * uncertainty / ln K``
      (old and uncertain samples score high; a new one has age 0);
    - a sample of class c with fewer than ``capacity / K`` samples of c held joins a free slot when there is
      one; when the bank is full, the highest-scoring sample of the MAJORITY classes (those holding the most)
      leaves if it scores above the new one, else the new one is dropped;
    - a sample of a class already at its quota replaces the highest-scoring sample of its own class on the
      same condition;
    - after each offered sample, whether kept or not, every held sample (the new one included) ages by one.

    Ties go to the sample the official lists visit last: the highest class, then the latest held. ``contents``
    gives the samples class by class, oldest first (the official order), with their ages over ``capacity``
    (the timeliness weights' argument). State (buffers): ``samples (capacity, *sample_shape)``, ``classes``
    (-1: a free slot), ``ages``, ``uncertainty``, ``index``, ``stamps`` (when each was kept) and ``seen``
    (samples offered so far).

    Args:
        capacity: N (RoTTA: 64).
        num_classes: K.
        sample_shape: the shape of one sample (an image ``(C, H, W)``).
        lambda_t, lambda_u: the weights of timeliness and uncertainty in the score (RoTTA: 1, 1).
    """

    def __init__(self, capacity: int, num_classes: int, sample_shape: tuple[int, ...], lambda_t: float = 1.0,
                 lambda_u: float = 1.0):
        super().__init__()
        if capacity < 1 or num_classes < 2:
            raise ValueError(f"a memory bank needs a capacity >= 1 and 2 or more classes, got {capacity} and "
                             f"{num_classes}")
        self.capacity, self.num_classes = capacity, num_classes
        self.lambda_t, self.lambda_u = lambda_t, lambda_u
        self.register_buffer("samples", torch.zeros(capacity, *sample_shape))
        self.register_buffer("classes", torch.full((capacity,), -1, dtype=torch.int64))
        self.register_buffer("ages", torch.zeros(capacity, dtype=torch.int64))
        self.register_buffer("uncertainty", torch.zeros(capacity))
        self.register_buffer("index", torch.zeros(capacity, dtype=torch.int64))
        self.register_buffer("stamps", torch.zeros(capacity, dtype=torch.int64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def reset(self) -> None:
        """Empty the bank (a reset to the source)."""
        self.samples.zero_()
        self.classes.fill_(-1)
        for buffer in (self.ages, self.uncertainty, self.index, self.stamps, self.seen):
            buffer.zero_()

    def scores(self) -> torch.Tensor:
        """``(capacity,)`` float64 scores of the held samples (meaningless at free slots)."""
        age = self.ages.double() / self.capacity
        return (self.lambda_t / (1 + torch.exp(-age))
                + self.lambda_u * self.uncertainty.double() / math.log(self.num_classes))

    def _evict(self, candidates: torch.Tensor, score: float) -> int | None:
        """The slot freed for a sample scoring ``score`` from the held ``candidates (capacity,) bool``: the
        highest-scoring candidate when it scores above ``score`` (None: the sample is dropped; no candidate:
        a free slot)."""
        if not bool(candidates.any()):
            return self.free_slot()
        scores = self.scores().masked_fill(~candidates, -math.inf)
        best = scores.max()
        if not float(best) > score:
            return None
        tied = candidates & (scores == best)
        order = self.classes * (int(self.stamps.max()) + 1) + self.stamps  # the official visiting order
        return int(torch.where(tied, order, torch.full_like(order, -1)).argmax())

    def free_slot(self) -> int | None:
        free = torch.nonzero(self.classes < 0)
        return int(free[0]) if len(free) else None

    @torch.no_grad()
    def add(self, sample: torch.Tensor, label: int, uncertainty: float, index: int) -> bool:
        """Offer one sample with its pseudo-label, uncertainty and global index; returns whether it was
        kept."""
        held = self.classes >= 0
        counts = torch.bincount(self.classes[held], minlength=self.num_classes)
        score = self.lambda_t * 0.5 + self.lambda_u * float(uncertainty) / math.log(self.num_classes)
        if int(counts[label]) < self.capacity / self.num_classes:
            slot = self.free_slot()
            if slot is None:  # full: a sample of the majority classes makes room
                majority = (counts == counts.max()).nonzero().flatten()
                slot = self._evict(torch.isin(self.classes, majority) & held, score)
        else:
            slot = self._evict(self.classes == label, score)
        if slot is not None:
            self.samples[slot] = sample.to(self.samples)
            self.classes[slot] = int(label)
            self.ages[slot] = 0
            self.uncertainty[slot] = float(uncertainty)
            self.index[slot] = int(index)
            self.stamps[slot] = int(self.seen)
        self.ages[self.classes >= 0] += 1
        self.seen += 1
        return slot is not None

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(samples (n, ...), ages (n,) / capacity, global indices (n,))`` of the held samples, class by
        class, oldest first."""
        held = torch.nonzero(self.classes >= 0).flatten()
        order = self.classes[held] * (int(self.seen) + 1) + self.stamps[held]
        slots = held[torch.argsort(order)]
        return self.samples[slots], self.ages[slots].float() / self.capacity, self.index[slots]

    def counts(self) -> torch.Tensor:
        """``(K,)`` how many samples of each class are held."""
        return torch.bincount(self.classes[self.classes >= 0], minlength=self.num_classes)


def timeliness_weights(ages: torch.Tensor) -> torch.Tensor:
    """RoTTA's timeliness reweighting of the memory samples' loss: ``exp(-a) / (1 + exp(-a))`` of each age
    ``a`` (over the capacity), 1/2 for a new sample, decaying with age."""
    return torch.sigmoid(-ages)
