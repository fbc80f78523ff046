"""BatchNorm helpers: the normalisation baselines (Tent, AdaBN) and process-count-independent
BatchNorm under DDP."""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn

from ..pseudo_labels.distributed import sum_with_grad, world_size


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``network`` (maybe none)."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batch_norm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``network``; raises when there is none (nothing to adapt)."""
    layers = batch_norms(network)
    if not layers:
        raise ValueError(f"the source model ({type(network).__name__}) has no BatchNorm layer to adapt")
    return layers


def affine_norm_layers(network: nn.Module) -> list[nn.Module]:
    """Every LayerNorm and GroupNorm layer of ``network`` with a scale and shift (transformers and
    ConvNeXt normalise with these instead of BatchNorm; they hold no running statistics)."""
    return [m for m in network.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))
            and getattr(m, "weight", None) is not None]


def use_batch_statistics(layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
    """Normalise with each batch's own statistics from now on (Tent): running statistics are dropped."""
    for bn in layers:
        bn.track_running_stats = False
        bn.running_mean, bn.running_var = None, None


def reset_running_statistics(layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
    """Zero the running statistics and switch to a cumulative average (momentum None), so the next
    train-mode passes re-estimate them from target data alone (AdaBN)."""
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the GLOBAL batch across processes, on
    any device (``torch.nn.SyncBatchNorm`` refuses CPU). Sums and squared sums are all-reduced
    with autograd, so the update equals that of one process on the whole batch. On one process
    or in eval mode it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected (B, C, ...) input, got shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device)
        totals = sum_with_grad(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        channels = x.shape[1]
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * var.detach() * n / (n - 1).clamp_min(1))
        shape = (1, channels, *[1] * (x.dim() - 2))
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


class GlobalBatchNormSync(LayerSync):
    """Lightning layer-sync plugin: BatchNorm layers become ``GlobalBatchNorm`` while fitting under
    DDP (CPU or GPU), and revert after. The ``sfda`` command uses it for ``trainer.sync_batchnorm``."""

    def apply(self, model: nn.Module) -> nn.Module:
        self._classes = {}
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) \
                    and not isinstance(module, GlobalBatchNorm):
                self._classes[id(module)] = type(module)
                module.__class__ = GlobalBatchNorm
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if id(module) in getattr(self, "_classes", {}):
                module.__class__ = self._classes[id(module)]
        return model
