"""RoTTA's robust BatchNorm (Yuan et al., CVPR 2023, Sec. 3.2): global statistics that follow the batches'
by an exponential moving average, and normalisation with them, in training as in evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RobustBatchNorm(nn.Module):
    """A BatchNorm layer's replacement (official ``RobustBN1d`` / ``RobustBN2d``, any dimension here). In
    train mode, with the batch's mean and biased variance ``mu_b``, ``var_b`` over every dimension but the
    channels:

        mu <- (1 - alpha) mu + alpha mu_b,    var <- (1 - alpha) var + alpha var_b

    and the batch is normalised with the UPDATED ``mu``, ``var`` (the gradient flows through the batch's
    share, as in the official code); in eval mode with the stored ones, unchanged. The statistics start from
    the layer's running statistics (the source's).

    It keeps BatchNorm's parameter and buffer names (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``), so a network's state dict, its source snapshot and its checkpoints keep their
    keys. It is deliberately NOT a ``torch.nn.modules.batchnorm._BatchNorm``: the CLI's synchronised
    BatchNorm (``sfda.models.norm.GlobalBatchNormSync``) leaves it as it is, and its moments are those of the
    batch it is given (RoTTA gives every process the whole global memory bank, so they are the global
    ones; all-reducing them would count each sample once per process in the backward pass).

    Args:
        layer: the BatchNorm layer it replaces (with running statistics).
        momentum: alpha (RoTTA: 0.05).
    """

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm, momentum: float):
        super().__init__()
        if layer.running_mean is None or layer.running_var is None:
            raise ValueError(f"{layer}: robust BatchNorm starts from the layer's running statistics, and it "
                             "keeps none (track_running_stats=False)")
        self.num_features = layer.num_features
        self.eps = layer.eps
        self.momentum = momentum
        self.weight = None if layer.weight is None else nn.Parameter(layer.weight.detach().clone())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.register_buffer("running_mean", layer.running_mean.detach().clone())
        self.register_buffer("running_var", layer.running_var.detach().clone())
        tracked = layer.num_batches_tracked
        tracked = torch.zeros((), dtype=torch.long) if tracked is None else tracked.detach().clone()
        self.register_buffer("num_batches_tracked", tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                self.eps)
        values = x.float()
        dims = [0, *range(2, values.dim())]
        batch_var, batch_mean = torch.var_mean(values, dim=dims, unbiased=False)
        mean = (1 - self.momentum) * self.running_mean + self.momentum * batch_mean
        var = (1 - self.momentum) * self.running_var + self.momentum * batch_var
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.num_batches_tracked += 1
        shape = (1, values.shape[1], *[1] * (values.dim() - 2))
        out = (values - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def use_robust_batch_norm(network: nn.Module, momentum: float) -> list[RobustBatchNorm]:
    """Replace every BatchNorm layer of ``network`` in place by a ``RobustBatchNorm`` (its weights and running
    statistics carried over); returns the new layers in module order (none: the network has no BatchNorm)."""
    replaced: list[RobustBatchNorm] = []
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                robust = RobustBatchNorm(child, momentum)
                setattr(parent, name, robust)
                replaced.append(robust)
    return replaced
