"""Collectives the engine needs, safe on one process and under DDP (gloo or nccl)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def every_process_agrees(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Whether ``flag`` holds on every process (``flag`` itself on one process); every process calls it.
    ``device``: where the collective's tensor lives (the module's device under nccl)."""
    if world_size() == 1:
        return flag
    dissent = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(dissent)
    return dissent.item() == 0


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ``(n_r, ...)`` from every rank along dim 0, ranks in order.

    Row counts may differ between ranks: each rank pads to the largest count before
    ``all_gather`` (unequal shapes hang or abort gloo) and the padding is dropped after.
    Every rank must call this. No gradient flows through the result.
    """
    if world_size() == 1:
        return tensor
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    pieces = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(pieces, padded.contiguous())
    return torch.cat([piece[: int(c.item())] for piece, c in zip(pieces, counts, strict=True)])


class _SumWithGrad(torch.autograd.Function):
    """All-reduce (sum) whose backward is also a sum all-reduce: every process's loss depends on
    every process's contribution. Shape-preserving, ``(...) -> (...)``."""

    @staticmethod
    def forward(ctx, values: torch.Tensor) -> torch.Tensor:
        total = values.contiguous().clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class _GatherWithGrad(torch.autograd.Function):
    """All-gather of equal-shaped ``(n, ...)`` tensors -> ``(world * n, ...)``, ranks in order.
    Backward sums the incoming gradient over processes and returns this rank's rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        pieces = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(pieces, tensor.contiguous())
        return torch.cat(pieces)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def sum_with_grad(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over processes, keeping the autograd graph (identity on one process)."""
    return values if world_size() == 1 else _SumWithGrad.apply(values)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped ``tensor`` ``(n, ...)`` from every rank, keeping the autograd graph.

    Used for batch-level loss terms (the marginal of IM, AaD's dispersion) so the loss is
    that of the global batch whatever the number of processes. Backward sums the
    gradient of every rank's copy of the loss; since every rank computes the same loss
    and DDP averages gradients, the parameter gradient equals that of one process.
    """
    return tensor if world_size() == 1 else _GatherWithGrad.apply(tensor)


def masked_global_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values (B,)`` over the rows of the GLOBAL batch where ``mask (B,)`` holds.

    Each process returns its own masked sum divided by the global count, times the number of
    processes: DDP averages gradients over processes, so the update equals that of the mean
    over the whole batch on one process, however the masked rows fall between processes.
    """
    count = gather_rows(mask.float()).sum().clamp(min=1.0)
    return (values * mask.float()).sum() * world_size() / count


def one_row_per_index(index: torch.Tensor) -> torch.Tensor:
    """Positions ``(U,)`` that keep one row per distinct value of ``index (N,)``, in increasing
    index order: drops the duplicates a padded distributed sampler adds after ``gather_rows``."""
    if index.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=index.device)
    position = torch.full((int(index.max()) + 1,), -1, dtype=torch.long, device=index.device)
    position[index] = torch.arange(index.numel(), device=index.device)
    return position[torch.unique(index)]


def check_identical_across_ranks(tensor: torch.Tensor, what: str) -> None:
    """Raise when ``tensor`` (same shape on every rank) differs between processes: a guard on
    state that every rank must derive identically (queried samples, pseudo-labels)."""
    if world_size() == 1:
        return
    rows = gather_rows(tensor.detach().reshape(1, -1).double())
    if not bool((rows == rows[0]).all()):
        raise RuntimeError(f"{what} differ between processes; every rank must derive them from the same "
                           "gathered pass")


def average_gradients(parameters: list[torch.Tensor]) -> None:
    """Average the ``.grad`` of ``parameters`` over processes in one all-reduce (a no-op on one process).
    For methods that synchronise gradients themselves: several optimisers, each stepped after its own
    backward pass, which DDP's reducer (one reduction per forward) does not serve."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if world_size() == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
