"""Eval-mode BatchNorm folded into convolutions: same outputs, only where the order is certain, never
trained or saved."""

import pytest
import torch
from kits.networks import conv_net
from torch import nn

from sfda.models.batchnorm_folding import foldable_pairs, folded_copy
from sfda.run.speed import ChannelsLast


def test_folded_copy_gives_the_same_outputs_and_leaves_the_network_alone():
    net = conv_net()
    ChannelsLast().setup(None, net, "fit")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 3, 10, 10).contiguous(memory_format=torch.channels_last)
    folded = folded_copy(net)
    assert len(foldable_pairs(net)) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.Identity) for m in folded) == 2
    assert torch.allclose(folded(x), net(x), atol=1e-5)
    assert folded[0].weight.stride() == net[0].weight.stride()  # channels-last kept
    assert not any(p.requires_grad for p in folded.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(isinstance(net[i], nn.BatchNorm2d) for i in (1, 4))


def test_half_precision_weights_are_folded_in_float32_and_keep_their_dtype():
    net = conv_net().to(torch.bfloat16)
    x = torch.randn(5, 3, 10, 10, dtype=torch.bfloat16)
    folded = folded_copy(net)
    assert folded[0].weight.dtype == folded[0].bias.dtype == torch.bfloat16
    assert torch.allclose(folded(x).float(), net(x).float(), atol=0.1, rtol=0.05)


class Attributes(nn.Module):
    """A conv and a BatchNorm as attributes: their order is only known from ``forward``."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


class Reordered(nn.Sequential):
    def forward(self, x):  # runs its children in another order than listed
        return self[0](self[1](x))


def hooked() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].register_forward_hook(lambda module, inputs, output: None)  # someone taps the BatchNorm's output
    return net


@pytest.mark.parametrize("network", [
    nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)),  # batch stats (Tent)
    nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)),  # BatchNorm before the conv
    nn.Sequential(nn.ConvTranspose2d(3, 4, 3), nn.BatchNorm2d(4)),
    nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4)),
    Reordered(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)),
    Attributes(),
    hooked(),
], ids=["no-running-stats", "bn-first", "transposed", "reflect-padding", "custom-forward", "attributes",
        "hooked"])
def test_only_pairs_in_a_known_order_are_folded(network):
    assert foldable_pairs(network) == [] and folded_copy(network) is None
