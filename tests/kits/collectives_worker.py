"""Run as a script: 2 gloo processes check the engine's autograd collectives against one process on the
whole batch:
GlobalBatchNorm on half batches vs BatchNorm2d, an IM-style global-marginal loss through ``gather_with_grad``,
and the engine's target pass (``collect_rows``: fixed and variable-length rows per sample, padded
duplicates dropped).
Each process writes '<out dir>/rank<r>.txt' = 'ok' when outputs, running variance and gradients match,
else the list of checks; usage: collectives_worker.py <port> <out dir>."""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sfda.models.norm import GlobalBatchNorm
from sfda.pseudo_labels import gather_with_grad
from sfda.pseudo_labels.passes import collect_rows


def one_process_reference():
    torch.manual_seed(0)
    x = torch.randn(16, 4, 5, 5, requires_grad=True)
    bn, w = nn.BatchNorm2d(4), torch.randn(16, 4, 5, 5)
    y = bn(x)
    (y * w).mean().backward()
    return y.detach(), bn.weight.grad, bn.running_var, x.grad


def marginal_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean softmax of ``logits (N, C)``: a loss that couples every sample of the batch."""
    marginal = logits.softmax(dim=1).mean(dim=0)
    return -(marginal * marginal.log()).sum()


def gather_checks(rank: int) -> list[bool]:
    torch.manual_seed(1)
    logits = torch.randn(12, 5, requires_grad=True)
    marginal_entropy(logits).backward()
    part = slice(6 * rank, 6 * (rank + 1))
    mine = logits.detach()[part].clone().requires_grad_(True)
    loss = marginal_entropy(gather_with_grad(mine))
    loss.backward()
    # every rank holds the same global loss; DDP averages gradients over the 2 processes
    return [torch.allclose(loss.detach(), marginal_entropy(logits.detach())),
            torch.allclose(mine.grad / 2, logits.grad[part], atol=1e-7)]


def sample_rows(index: torch.Tensor) -> dict:
    """A pass's rows for samples ``index``: a 2x2 'heatmap' each, and ``index % 3`` 'boxes' of 4 values."""
    heat = index.float()[:, None, None].expand(-1, 2, 2).clone()
    boxes = [torch.full((int(i) % 3, 4), float(i)) for i in index]
    return {"heatmap": heat, "boxes": boxes}


def pass_checks(rank: int) -> list[bool]:
    """collect_rows on a padded 2-process split of 7 samples equals the one-process pass."""
    share = [[0, 2, 4, 6], [1, 3, 5, 0]][rank]  # rank 1 repeats sample 0, as a padded sampler does
    batches = [{"index": torch.tensor(share[i:i + 2])} for i in (0, 2)]
    got = collect_rows(batches, lambda b: sample_rows(b["index"]))
    want = sample_rows(torch.arange(7))
    boxes_equal = all(torch.equal(a, b) for a, b in zip(got["boxes"], want["boxes"], strict=True))
    return [got["index"].tolist() == list(range(7)), torch.equal(got["heatmap"], want["heatmap"]),
            len(got["boxes"]) == 7 and boxes_equal]


def worker(rank: int, port: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    y_ref, w_grad_ref, var_ref, x_grad_ref = one_process_reference()
    torch.manual_seed(0)
    x = torch.randn(16, 4, 5, 5)
    bn, w = nn.BatchNorm2d(4), torch.randn(16, 4, 5, 5)
    bn.__class__ = GlobalBatchNorm
    part = slice(8 * rank, 8 * (rank + 1))
    xp = x[part].clone().requires_grad_(True)
    y = bn(xp)
    (y * w[part]).mean().backward()
    w_grad = bn.weight.grad.clone()
    dist.all_reduce(w_grad)
    checks = [torch.allclose(y, y_ref[part], atol=1e-5), torch.allclose(w_grad / 2, w_grad_ref, atol=1e-6),
              torch.allclose(bn.running_var, var_ref, atol=1e-6),
              torch.allclose(xp.grad / 2, x_grad_ref[part], atol=1e-7)]
    checks += gather_checks(rank) + pass_checks(rank)
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as handle:
        handle.write("ok" if all(checks) else f"mismatch {checks}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=2)
