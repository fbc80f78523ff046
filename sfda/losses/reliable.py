"""Reliable-entropy test-time adaptation (EATA, ETA, SAR): per-sample entropies of logits, means over the
samples a method selects taken over the GLOBAL batch (every process), and the moving averages these methods
keep of them. Shapes: B batch (this process's share), C classes."""

from __future__ import annotations

import torch

from ..pseudo_labels.distributed import sum_with_grad, world_size


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``(B, C) -> (B,)``: ``-sum_c softmax(z)_c log_softmax(z)_c`` in float32, the exact entropy the official
    EATA and SAR code computes (no epsilon inside the logarithm; gradient flows)."""
    z = logits.float()
    return -(z.softmax(dim=1) * z.log_softmax(dim=1)).sum(dim=1)


def global_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over processes, without gradient (itself on one process); every process calls it."""
    return sum_with_grad(values.detach().float())


def selected_mean(rows: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean of ``rows (B, ...)`` over the rows of the GLOBAL batch where ``mask (B,)`` holds, and how many
    rows that is, without gradient: the same on every process, whatever the split. An empty selection gives
    zeros and 0. Every process calls it (one all-reduce)."""
    rows = rows.detach().float()
    keep = mask.to(rows.dtype).view(-1, *[1] * (rows.dim() - 1))
    total = global_sum(torch.cat([(rows * keep).sum(dim=0).reshape(-1), mask.float().sum().reshape(1)]))
    count = int(total[-1].round())
    return total[:-1].view(rows.shape[1:]) / max(count, 1), count


def update_moving_average(average: torch.Tensor, updates: torch.Tensor, value: torch.Tensor,
                          momentum: float = 0.9) -> None:
    """In place: ``average`` becomes ``value`` at its first update (``updates == 0``) and
    ``momentum * average + (1 - momentum) * value`` after; ``updates`` counts them (EATA's moving average of
    probabilities, Eq. 4, and SAR's of its loss, both with the official momentum 0.9)."""
    value = value.detach().to(average.dtype)
    if int(updates) == 0:
        average.copy_(value)
    else:
        average.mul_(momentum).add_((1 - momentum) * value)
    updates += 1


def mean_over_global_selection(values: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """The loss whose gradient, once DDP has averaged it over processes, is that of the mean of
    ``values (B,)`` over the ``count`` rows of the GLOBAL batch where ``mask (B,)`` holds: this process's
    masked sum times the number of processes over ``count`` (``count`` from ``selected_mean``: a mean over
    only this process's selected rows would weigh samples by how the selection fell between processes). 0,
    with a gradient of zeros, when nothing is selected."""
    scale = world_size() / max(count, 1)
    return (values * mask.to(values.dtype)).sum() * scale
