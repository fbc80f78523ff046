"""Detection networks: torchvision Faster R-CNN builders for source training and adaptation.

``faster_rcnn`` is the one builder a detection artifact names (``sfda.models.detector:faster_rcnn``);
its keyword arguments are the artifact's ``architecture.kwargs``. Backbones are built from random
initialisation (no download is ever made); a user's own weights come in through the artifact or an
``ExternalModel`` state dict.

Choices that differ from torchvision's defaults, and why:
- ``min_size = max_size = input size``: the model's own transform then never rescales, so the
  teacher and the student always see one size (torchvision's train mode picks a random size).
- anchors scale with the input size (``anchor_scale``): torchvision's (32 .. 512) suit 800-pixel
  inputs; tree crowns in 400-pixel tiles and digits on 128-pixel canvases are 10-60 pixels.
- BatchNorm is trainable for source training from scratch (torchvision freezes it because it
  starts from ImageNet weights); adaptation freezes it (``freeze_batchnorm``).
- ``efficientnet_lite{0,1,2}_fpn``: the one trunk with real ImageNet weights offline
  (``sfda.models.efficientnet_lite``; ``backbone_weights="imagenet"``), with frozen BatchNorm and the
  stem and first ``frozen_stages`` stages frozen, as torchvision fine-tunes its pretrained detectors.
- ``rpn_score_thresh = 0`` for every backbone (the MobileNet builders default to 0.05, which
  deletes the low-objectness proposals LPLD mines).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from .efficientnet_lite import (
    VARIANTS,
    EfficientNetLite,
    EfficientNetLiteFPN,
    efficientnet_lite,
    freeze_stages,
)

LITE_BACKBONES = tuple(f"{name}_fpn" for name in VARIANTS)
BACKBONES = ("resnet18_fpn", "resnet50_fpn", "mobilenet_v3_fpn", *LITE_BACKBONES)
DETECTOR = "sfda.models.detector:faster_rcnn"


def _backbone(name: str, frozen_bn: bool, fpn_channels: int, levels: list[int], weights: str | None,
              frozen_stages: int) -> nn.Module:
    """A trunk with a feature pyramid of ``fpn_channels`` on the levels ``levels`` (1..4, strides 4..32)."""
    if weights not in (None, "imagenet") or (weights and name not in LITE_BACKBONES):
        raise ValueError(f"model.backbone_weights: expected null, or 'imagenet' for one of "
                         f"{list(LITE_BACKBONES)}, got {weights!r} for '{name}'")
    if name in LITE_BACKBONES:
        variant = name.removesuffix("_fpn")
        trunk = efficientnet_lite(variant, num_classes=0) if weights else EfficientNetLite(variant, 0)
        if frozen_bn:
            freeze_batchnorm(trunk)
        return EfficientNetLiteFPN(freeze_stages(trunk, frozen_stages), tuple(levels), fpn_channels)
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    if name in ("resnet18_fpn", "resnet50_fpn"):
        trunk = getattr(resnet, name.removesuffix("_fpn"))(weights=None, norm_layer=norm)
        width = trunk.inplanes // 8  # channels of stage 1 (64 for ResNet-18, 256 for ResNet-50)
        return BackboneWithFPN(
            trunk,
            {f"layer{k}": str(i) for i, k in enumerate(levels)},
            [width * 2 ** (k - 1) for k in levels],
            fpn_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=None,
        )
    if name == "mobilenet_v3_fpn":
        return mobilenet_backbone(
            backbone_name="mobilenet_v3_large", weights=None, fpn=True, norm_layer=norm, trainable_layers=6
        )
    raise ValueError(f"model.backbone: expected one of {list(BACKBONES)}, got '{name}'")


def anchor_sizes(input_size: int, levels: int, anchor_scale: float) -> tuple[tuple[int, ...], ...]:
    """One anchor size per pyramid level: ``(16, 32, 64, ...) x anchor_scale x input_size / 400``."""
    base = max(4.0, 16.0 * anchor_scale * input_size / 400)
    return tuple((int(round(base * 2**level)),) for level in range(levels))


def faster_rcnn(
    num_classes: int,
    input_size: int,
    mean: list[float],
    std: list[float],
    backbone: str = "resnet18_fpn",
    anchor_scale: float = 1.0,
    frozen_bn: bool = False,
    detections_per_image: int = 100,
    representation_size: int = 1024,
    rois_per_image: int = 512,
    proposals_per_image: int = 2000,
    fpn_channels: int = 256,
    levels: tuple[int, ...] = (1, 2, 3, 4),
    backbone_weights: str | None = None,
    frozen_stages: int = 0,
) -> FasterRCNN:
    """A torchvision ``FasterRCNN`` for ``num_classes`` foreground classes (background is class 0).

    Args:
        num_classes: foreground classes (the artifact's ``class_names``); the box predictor has one more.
        input_size: the square size images are given at (``min_size = max_size``; no rescaling).
        mean, std: per-channel normalisation of ``[0, 1]`` images, done by the model's transform.
        backbone: one of ``BACKBONES`` (ResNet-18-FPN is the CPU default).
        anchor_scale: multiplies the anchor sizes (see ``anchor_sizes``).
        frozen_bn: build with ``FrozenBatchNorm2d`` (a user's detector fine-tuned from ImageNet weights).
        detections_per_image: most detections kept per image (torchvision: 100).
        representation_size: width of the box head's two fully connected layers (torchvision: 1024).
        rois_per_image: RoIs sampled per image for the box-head loss (torchvision: 512).
        proposals_per_image: RPN proposals kept after NMS in training (torchvision: 2000; in eval mode
            torchvision keeps 1000, the detection task sets 300 for every network it scores).
        fpn_channels: width of the feature pyramid (torchvision: 256; the CPU recipes use 64).
        levels: the trunk levels (1..4, strides 4..32) the pyramid is built on, plus a pooled level.
        backbone_weights: 'imagenet' loads the EfficientNet-Lite trunk's ImageNet weights (fetched on
            first use); None: random initialisation (an artifact's state dict then holds every weight).
        frozen_stages: EfficientNet-Lite only: the stem and this many of its 7 stages get no gradient
            (2: everything up to stride 4, as torchvision's ``trainable_backbone_layers=3``).
    """
    if num_classes < 1:
        raise ValueError(f"model: a detector needs at least one foreground class, got {num_classes}")
    levels = sorted(set(levels))
    if not levels or not set(levels) <= {1, 2, 3, 4}:
        raise ValueError(f"model.levels: expected ResNet stages among 1..4, got {levels}")
    if not 0 <= frozen_stages <= 7:
        raise ValueError(f"model.frozen_stages: expected 0..7 EfficientNet-Lite stages, got {frozen_stages}")
    features = _backbone(backbone, frozen_bn, fpn_channels, levels, backbone_weights, frozen_stages)
    count = len(levels) + 1 if backbone != "mobilenet_v3_fpn" else 3
    sizes = anchor_sizes(input_size, count, anchor_scale * 2 ** (levels[0] - 1))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    box_head = TwoMLPHead(features.out_channels * 7 * 7, representation_size)
    return FasterRCNN(
        features,
        num_classes=None,
        min_size=input_size,
        max_size=input_size,
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=anchors,
        rpn_score_thresh=0.0,
        box_detections_per_img=detections_per_image,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        box_batch_size_per_image=rois_per_image,
        rpn_post_nms_top_n_train=proposals_per_image,
        rpn_pre_nms_top_n_train=max(2000, proposals_per_image),
    )


def detector_architecture(num_classes: int, input_size: int, mean, std, **kwargs) -> dict:
    """The artifact ``architecture`` entry of ``faster_rcnn``."""
    return {
        "target": DETECTOR,
        "kwargs": {
            "num_classes": num_classes,
            "input_size": input_size,
            "mean": list(mean),
            "std": list(std),
            **kwargs,
        },
    }


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` holding its statistics
    (adaptation keeps the source statistics; the spec's "freeze BatchNorm after source training")."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key))
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module
