"""Heatmap pose networks: SimpleBaseline (Xiao et al. 2018), a ResNet trunk, three transposed
convolutions (kernel 4, stride 2, BatchNorm, ReLU) and a 1x1 convolution to one heatmap per joint.

``simple_baseline`` is the one builder a pose artifact names (``sfda.models.pose:simple_baseline``); its
keyword arguments are the artifact's ``architecture.kwargs``. The trunk starts from random weights (no
download is ever made). Official: ResNet-101, 256 deconvolution channels, input 256 -> heatmap 64; the
CPU recipes take ResNet-18 with fewer channels and say so.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet

BACKBONES = ("resnet18", "resnet50", "resnet101")
POSE_NETWORK = "sfda.models.pose:simple_baseline"


class SimpleBaseline(nn.Module):
    """``(B, C, S, S) -> (B, K, S/4, S/4)`` heatmaps. ``backbone`` and ``decoder`` are its two parts (pose
    SFDA trains them apart)."""

    def __init__(
        self, num_joints: int, backbone: str = "resnet18", deconv_channels: int = 256, in_channels: int = 3
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone: expected one of {BACKBONES}, got {backbone!r}")
        trunk = getattr(resnet, backbone)(weights=None)
        if in_channels != 3:
            trunk.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.backbone = nn.Sequential(
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
            trunk.layer1,
            trunk.layer2,
            trunk.layer3,
            trunk.layer4,
        )
        layers, width = [], trunk.inplanes
        for _ in range(3):
            layers += [
                nn.ConvTranspose2d(width, deconv_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            width = deconv_channels
        head = nn.Conv2d(deconv_channels, num_joints, kernel_size=1)
        nn.init.normal_(head.weight, std=0.001)  # SimpleBaseline's initialisation of the final layer
        nn.init.zeros_(head.bias)
        self.decoder = nn.Sequential(*layers, head)
        self.num_joints = num_joints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(images))


def simple_baseline(
    num_joints: int, backbone: str = "resnet18", deconv_channels: int = 256, in_channels: int = 3
) -> SimpleBaseline:
    """The builder pose artifacts name."""
    return SimpleBaseline(num_joints, backbone, deconv_channels, in_channels)


def pose_architecture(
    num_joints: int, backbone: str = "resnet18", deconv_channels: int = 256, in_channels: int = 3
) -> dict:
    """The ``architecture`` entry of a pose artifact."""
    kwargs = {
        "num_joints": num_joints,
        "backbone": backbone,
        "deconv_channels": deconv_channels,
        "in_channels": in_channels,
    }
    return {"target": POSE_NETWORK, "kwargs": kwargs}
