"""BatchNorm helpers shared by the normalisation-based baselines (Tent, AdaBN)."""

from __future__ import annotations

from torch import nn


def batch_norm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``network``; raises when there is none (nothing to adapt)."""
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        raise ValueError(f"the source model ({type(network).__name__}) has no BatchNorm layer to adapt")
    return layers


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
