"""Networks as exports take them (``sfda.models.deployable``): batch-statistics BatchNorm (Tent) written
as reductions gives the same outputs, and a network without it is left as it is."""

from __future__ import annotations

import torch
from torch import nn

from sfda.models.deployable import BatchStatisticsNorm, with_explicit_batch_statistics
from sfda.models.norm import use_batch_statistics


def tent_like(dims: int = 2) -> nn.Module:
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    torch.manual_seed(0)
    network = nn.Sequential(conv(3, 4, 3), norm(4), nn.ReLU(), conv(4, 2, 1), norm(2)).eval()
    for layer in (network[1], network[4]):
        nn.init.normal_(layer.weight)
        nn.init.normal_(layer.bias)
    use_batch_statistics([network[1]])  # the first normalises each batch with its own statistics
    return network


def test_batch_statistics_batchnorm_is_rewritten_with_the_same_outputs():
    for dims, shape in ((2, (5, 3, 9, 9)), (3, (2, 3, 6, 6, 6))):
        network = tent_like(dims)
        rewritten = with_explicit_batch_statistics(network)
        batchnorm = nn.modules.batchnorm._BatchNorm
        assert isinstance(rewritten[1], BatchStatisticsNorm) and isinstance(rewritten[4], batchnorm)
        assert isinstance(network[1], batchnorm)  # the original is untouched
        images = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(rewritten(images), network(images), atol=1e-5)
            assert torch.allclose(rewritten(images[:1]), network(images[:1]), atol=1e-5)  # one sample too


def test_a_network_with_running_statistics_is_exported_as_it_is():
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    assert with_explicit_batch_statistics(network) is network
