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


def collect_rows(batches: Iterable[dict], per_batch: Callable[[dict], Rows]) -> Rows:
    """Run ``per_batch`` on every batch (each holds ``"index" (B,)``) and gather the rows.

    Returns ``{"index": (N,), name: (N, ...) or [N tensors]}`` identical on every rank, sorted by
    global index. Fixed-shape rows keep their dtype; no gradient flows.
    """
    index_parts: list[torch.Tensor] = []
    columns: dict[str, list[torch.Tensor]] = {}
    ragged: set[str] = set()
    for batch in batches:
        index_parts.append(batch["index"])
        for name, value in per_batch(batch).items():
            if isinstance(value, list):
                ragged.add(name)
                columns.setdefault(name, []).extend(value)
            else:
                columns.setdefault(name, []).append(value)
    if not index_parts:
        raise ValueError("collect_rows: the loader yielded no batches; the target set is empty")
    index = gather_rows(torch.cat(index_parts))
    keep = one_row_per_index(index)
    out: Rows = {"index": index[keep]}
    for name, parts in columns.items():
        out[name] = _gather_ragged(parts, keep) if name in ragged else gather_rows(torch.cat(parts))[keep]
    return out
