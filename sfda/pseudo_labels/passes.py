"""One pass over the target set that every refresh builds on: per-sample rows of any shape,
gathered over processes, one row per global sample index, in index order.

``per_batch(batch) -> {name: rows}`` says what a pass collects. A value is either

- a tensor ``(B, ...)``: one fixed-shape row per sample (features, probabilities, masks, heatmaps);
- a list of ``B`` tensors ``(n_i, ...)``: a variable number of rows per sample (boxes, keypoints),
  returned as a list of ``N`` tensors.

Under DDP every rank must run the pass over its share and gets the same full result; the
duplicates a padded sampler adds are dropped. Depends on torch only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .distributed import gather_rows, one_row_per_index

Rows = dict[str, torch.Tensor | list[torch.Tensor]]


def _gather_ragged(pieces: list[torch.Tensor], keep: torch.Tensor) -> list[torch.Tensor]:
    """Per-sample tensors ``(n_i, ...)`` of this rank -> the kept samples' tensors of all ranks."""
    counts = torch.tensor([p.shape[0] for p in pieces], dtype=torch.long, device=pieces[0].device)
    counts = gather_rows(counts)
    values = gather_rows(torch.cat(pieces))
    starts = torch.cumsum(counts, 0) - counts
    return [values[int(starts[i]):int(starts[i] + counts[i])] for i in keep.tolist()]


def loader_length(loader) -> int | None:
    """How many batches ``loader`` yields where it knows (``len``; a DataLoader over a sized sampler), else
    None."""
    try:
        return len(loader)
    except TypeError:
        return None


class RowBuffer:
    """Fixed-shape rows appended batch by batch into ONE preallocated tensor (grown by doubling when a
    capacity hint falls short), instead of a list of per-batch pieces joined at the end. Pieces of a few
    hundred KB, each allocated between a batch's large transient activations and kept to the end of the
    pass, pinned the C heap: the SVHN model's 60k pass grew the process by 830 MiB for 250 MiB of kept rows
    (``benchmarks/memory_profile.py``)."""

    def __init__(self, first: torch.Tensor, capacity: int):
        self.data = first.new_empty((max(capacity, len(first)), *first.shape[1:]))
        self.count = 0
        self.append(first)

    def append(self, rows: torch.Tensor) -> None:
        """Write ``rows (B, ...)`` after the rows so far."""
        needed = self.count + len(rows)
        if needed > len(self.data):
            grown = self.data.new_empty((max(needed, 2 * len(self.data)), *self.data.shape[1:]))
            grown[: self.count] = self.data[: self.count]
            self.data = grown
        self.data[self.count : needed] = rows
        self.count = needed

    def rows(self) -> torch.Tensor:
        """``(rows so far, ...)``."""
        return self.data[: self.count]

    def take(self) -> torch.Tensor:
        """The rows so far, for keeping: a view where the storage holds little more (a capacity hint that
        was right), else a trimmed copy (storage grown by doubling); the buffer is emptied."""
        rows = self.data[: self.count]
        if len(self.data) > self.count + self.count // 8:
            rows = rows.clone()
        self.data, self.count = self.data[:0], 0
        return rows


class RowCollector:
    """The rows of a pass, taken batch by batch (``add``) and gathered at its end (``gather``): fixed-shape
    fields in ``RowBuffer`` s, ragged ones as per-sample lists. ``expected_batches``: how many batches will
    come, where known (a loader's ``len``): each fixed-shape field is reserved at once for that many
    batches of the first one's size."""

    def __init__(self, expected_batches: int | None = None):
        self.expected_batches = expected_batches
        self.index_parts: list[torch.Tensor] = []
        self.fixed: dict[str, RowBuffer] = {}
        self.ragged: dict[str, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        """Batches added."""
        return len(self.index_parts)

    def add(self, index: torch.Tensor, rows: Rows) -> None:
        """One batch: ``index (B,)`` global sample indices and its rows (see the module docstring)."""
        self.index_parts.append(index)
        for name, value in rows.items():
            if isinstance(value, list):
                self.ragged.setdefault(name, []).extend(value)
            elif name in self.fixed:
                self.fixed[name].append(value)
            else:
                self.fixed[name] = RowBuffer(value, len(value) * (self.expected_batches or 1))

    def gather(self) -> Rows:
        """``{"index": (N,), name: (N, ...) or [N tensors]}`` of every process (a collective), one row per
        global index, in index order."""
        if not self.index_parts:
            raise ValueError("collect_rows: the loader yielded no batches; the target set is empty")
        index = gather_rows(torch.cat(self.index_parts))
        keep = one_row_per_index(index)
        in_order = is_identity(keep, len(index))
        out: Rows = {"index": index if in_order else index[keep]}
        fixed, self.fixed = self.fixed, {}  # the buffers go with the rows: nothing else keeps them
        for name in list(fixed):
            rows = gather_rows(fixed.pop(name).take())
            out[name] = rows if in_order else rows[keep]
        for name, parts in self.ragged.items():
            out[name] = _gather_ragged(parts, keep)
        return out


def is_identity(keep: torch.Tensor, count: int) -> bool:
    """Whether positions ``keep (U,)`` are ``0 .. count-1`` in order: the rows came one per index, sorted
    (one process, an unshuffled loader), so gathering them needs no indexed copy (600 MiB of features
    at 600,000 samples)."""
    return len(keep) == count and bool((keep == torch.arange(count, device=keep.device)).all())


def collect_rows(batches: Iterable[dict], per_batch: Callable[[dict], Rows],
                 expected_batches: int | None = None) -> Rows:
    """Run ``per_batch`` on every batch (each holds ``"index" (B,)``) and gather the rows.

    ``expected_batches``: how many batches the iterable yields, where known (see ``RowCollector``).

    Returns ``{"index": (N,), name: (N, ...) or [N tensors]}`` identical on every rank, sorted by
    global index. Fixed-shape rows keep their dtype; no gradient flows.
    """
    collector = RowCollector(expected_batches)
    for batch in batches:
        collector.add(batch["index"], per_batch(batch))
    return collector.gather()
