"""The labelling budget of an active run and how it is spread over rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Budget:
    """Total ``B = round(N * total_ratio)`` labels, ``n = round(N * round_ratio)`` per round, the
    last round takes what is left, so there are ``ceil(B / n)`` rounds (LFTL's schedule).

    Args:
        total_ratio: fraction of the target pool labelled by the end (0.05 = 5%).
        round_ratio: fraction labelled per round (0.005 with 10 rounds of a 5% budget).
    """

    total_ratio: float = 0.05
    round_ratio: float = 0.005

    def per_round(self, pool_size: int) -> list[int]:
        """Labels queried in each round, ``[n, n, ..., rest]``; raises on an impossible budget."""
        if not 0 < self.round_ratio <= self.total_ratio:
            raise ValueError("model.budget: expected 0 < round_ratio <= total_ratio, got "
                             f"round_ratio={self.round_ratio}, total_ratio={self.total_ratio}")
        total, each = round(pool_size * self.total_ratio), round(pool_size * self.round_ratio)
        if total > pool_size:
            raise ValueError(f"model.budget.total_ratio: {self.total_ratio} x {pool_size} target samples = "
                             f"{total} labels, more than the pool holds ({pool_size}); expected total_ratio "
                             "<= 1")
        if each < 1:
            raise ValueError(f"model.budget.round_ratio: {self.round_ratio} x {pool_size} target samples "
                             f"rounds to 0 labels per round; expected round_ratio >= {1 / pool_size:.2g}")
        rounds = math.ceil(total / each)
        return [each] * (rounds - 1) + [total - each * (rounds - 1)]
