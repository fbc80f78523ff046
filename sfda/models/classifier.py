"""Classifiers in the SHOT shape: backbone f -> bottleneck g (Linear+BN) -> weight-normalised head h."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .efficientnet_lite import VARIANTS, EfficientNetLite, efficientnet_lite


def lenet(in_channels: int = 1, size: int = 28) -> tuple[nn.Module, int]:
    """SHOT's digit LeNet backbone (two 5x5 convs, dropout); returns (module, feature width)."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(20, 50, 5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
    )
    with torch.no_grad():
        width = net.eval()(torch.zeros(1, in_channels, size, size)).shape[1]
    return net.train(), width


def mlp(in_channels: int = 1, size: int = 28, hidden: int = 512) -> tuple[nn.Module, int]:
    """Two-layer perceptron backbone on the flattened image; returns (module, feature width)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU()), hidden


def torchvision_backbone(name: str) -> tuple[nn.Module, int]:
    """A torchvision ResNet without its fc (random init: no weights are downloaded here)."""
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


BACKBONES = ("lenet", "mlp", "resnet18", "resnet34", "resnet50", *VARIANTS)


class SourceClassifier(nn.Module):
    """f -> g -> h. ``forward(x) -> logits (B, C)``; ``bottleneck`` output is the adaptation feature.

    Args:
        backbone: one of BACKBONES.
        num_classes: C.
        in_channels, input_size: image shape the backbone is built for.
        bottleneck_dim: width of g (SHOT: 256).
        pretrained: start an EfficientNet-Lite backbone from its ImageNet weights (fetched on first use;
            the inputs are then 3-channel, normalised with mean 0.5 and std 0.5). An artifact records
            False: its state dict holds every weight.
    """

    def __init__(self, backbone: str = "lenet", num_classes: int = 10, in_channels: int = 1,
                 input_size: int = 28, bottleneck_dim: int = 256, pretrained: bool = False):
        super().__init__()
        if pretrained and backbone not in VARIANTS:
            raise ValueError(f"model.pretrained: ImageNet weights exist here only for {sorted(VARIANTS)}, "
                             f"not for '{backbone}'")
        if backbone in VARIANTS:
            self.backbone = efficientnet_lite(backbone, num_classes=0) if pretrained else EfficientNetLite(
                backbone, num_classes=0)
            width = self.backbone.num_features
        elif backbone in ("lenet", "mlp"):
            self.backbone, width = {"lenet": lenet, "mlp": mlp}[backbone](in_channels, input_size)
        elif backbone in BACKBONES:
            self.backbone, width = torchvision_backbone(backbone)
        else:
            raise ValueError(f"model.backbone: unknown backbone '{backbone}', expected one of {BACKBONES}")
        self.bottleneck = nn.Sequential(nn.Linear(width, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim))
        self.head = weight_norm(nn.Linear(bottleneck_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bottleneck(self.backbone(x)))
