"""Inference copies of a network with each eval-mode BatchNorm folded into the convolution before it.

In eval mode a BatchNorm that normalises with its running statistics is a per-channel affine map, so
``bn(conv(x))`` is one convolution with rescaled weights and a shifted bias (the same arithmetic up to
float rounding). On a CPU the BatchNorm pass over the activations is memory-bound and costs about a
fifth of an eval-mode forward of a small digit CNN (``benchmarks/reference_loop.py``); the engine's
full target passes and evaluation run on such a folded copy (``ClassifierTask.folded_inference``).

Only pairs whose order is certain are folded: a convolution immediately followed by its BatchNorm in
a plain ``nn.Sequential`` (whose forward runs its children in order), with running statistics, no
hooks and no parametrisation on either. Anything else is left as it is; the copy is never trained
and never saved.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm(conv(x))`` is, in eval mode, one convolution."""
    return (type(conv) in CONVOLUTIONS and isinstance(norm, nn.modules.batchnorm._BatchNorm)
            and norm.running_mean is not None and norm.running_var is not None
            and norm.num_features == conv.out_channels and conv.padding_mode == "zeros"
            and not (_hooked(conv) or _hooked(norm))
            and not (parametrize.is_parametrized(conv) or parametrize.is_parametrized(norm)))


def foldable_pairs(network: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """``(container, i)`` for every foldable ``container[i]`` (convolution), ``container[i + 1]``
    (BatchNorm) pair of ``network``'s plain ``nn.Sequential`` containers."""
    pairs = []
    for module in network.modules():
        if type(module).forward is not nn.Sequential.forward or not isinstance(module, nn.Sequential):
            continue
        children = list(module)
        pairs += [(module, i) for i in range(len(children) - 1) if _foldable(children[i], children[i + 1])]
    return pairs


@torch.no_grad()
def folded_copy(network: nn.Module) -> nn.Module | None:
    """An eval-mode, gradient-free copy of ``network`` with its foldable convolution + BatchNorm pairs
    (see ``foldable_pairs``) each made one convolution; None when ``network`` has no such pair.
    The copy shares nothing with ``network``: later changes to ``network`` do not reach it."""
    if not foldable_pairs(network):
        return None
    folded = copy.deepcopy(network).eval().requires_grad_(False)
    for container, i in foldable_pairs(folded):
        conv, norm = container[i], container[i + 1]
        weight, bias = fuse_conv_bn_weights(*map(_float, (conv.weight, conv.bias, norm.running_mean,
                                                          norm.running_var)),
                                            norm.eps, _float(norm.weight), _float(norm.bias))
        dtype = conv.weight.dtype  # folded in float32, kept in the weights' own dtype
        same_strides = torch.empty_strided(weight.shape, conv.weight.stride(), dtype=dtype,
                                           device=weight.device).copy_(weight)  # keep channels-last
        conv.weight = nn.Parameter(same_strides, requires_grad=False)
        conv.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        container[i + 1] = nn.Identity()
    return folded
