"""A tiny eval-mode conv + BatchNorm network with non-trivial running statistics."""

from __future__ import annotations

import torch
from torch import nn


def conv_net() -> nn.Sequential:
    """Two conv + BatchNorm pairs (one conv without bias) with non-trivial running statistics, eval mode."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    for _ in range(3):  # running statistics away from (0, 1)
        net(3 * torch.randn(16, 3, 10, 10) + 1)
    return net.eval()
