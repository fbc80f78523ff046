"""TargetBank: per-sample state of the target set keyed by the dataset's global index."""

from __future__ import annotations

import torch
from torch import nn

from .distributed import gather_rows


class TargetBank(nn.Module):
    """Rows of named per-sample tensors for all N target samples.

    Each field is a persistent buffer ``(N, dim)`` (saved in checkpoints, so a resumed run
    continues with the same bank). Writes are keyed by the global sample index and, when
    ``synchronise`` is true, gathered from every process first, so under DDP every rank holds
    the full, identical bank. Rows written twice in one call (the duplicates that a padding
    sampler adds) get the same value, so the order does not matter.

    Args:
        num_samples: N, the size of the target training set.
        fields: name -> row width, e.g. ``{"features": 256, "probs": 10}``.
    """

    def __init__(self, num_samples: int, fields: dict[str, int]):
        super().__init__()
        if num_samples <= 0:
            raise ValueError(f"TargetBank: num_samples must be positive, got {num_samples}")
        self.num_samples = num_samples
        self.fields = dict(fields)
        for name, dim in self.fields.items():
            self.register_buffer(name, torch.zeros(num_samples, dim))
        self.register_buffer("filled", torch.zeros(num_samples, dtype=torch.bool))

    def write(self, index: torch.Tensor, synchronise: bool = True, **values: torch.Tensor) -> None:
        """Store ``values[name][i]`` at row ``index[i]`` for every field given.

        Args:
            index: ``(B,)`` global sample indices.
            synchronise: gather ``index`` and ``values`` from all processes first (every rank must call).
            values: field name -> ``(B, dim)``; detached and cast to float32.
        """
        unknown = set(values) - set(self.fields)
        if unknown:
            raise KeyError(f"TargetBank has no field(s) {sorted(unknown)}; fields are {sorted(self.fields)}")
        index = index.to(self.filled.device).long()
        if synchronise:
            index = gather_rows(index)
        for name, rows in values.items():
            rows = rows.detach().float().to(self.filled.device)
            if synchronise:
                rows = gather_rows(rows)
            getattr(self, name)[index] = rows
        self.filled[index] = True

    def is_full(self) -> bool:
        """True when every row was written at least once."""
        return bool(self.filled.all())

    def read(self, name: str, index: torch.Tensor | None = None) -> torch.Tensor:
        """Field ``name``, all rows ``(N, dim)`` or the rows at ``index``."""
        rows = getattr(self, name)
        return rows if index is None else rows[index.to(rows.device).long()]
