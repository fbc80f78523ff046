"""Pseudo-box pieces shared by detection methods: confident detections, overlap filtering, refined boxes.

Boxes are ``(n, 4)`` xyxy; labels follow torchvision (background 0, classes 1..C).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, clip_boxes_to_image


def confident_detections(detections: list[dict], threshold: float) -> list[dict]:
    """Per image, the detections with score > ``threshold`` as training targets ``{"boxes", "labels"}``
    (an image without any keeps empty tensors: it trains as all background)."""
    out = []
    for det in detections:
        keep = det["scores"] > threshold
        out.append({"boxes": det["boxes"][keep].detach(), "labels": det["labels"][keep].detach()})
    return out


def max_overlap(boxes: torch.Tensor, accepted: torch.Tensor) -> torch.Tensor:
    """``(n,)`` largest IoU of each box with ``accepted (m, 4)``; zeros when ``m == 0`` (``box_iou(n, 0)``
    followed by ``max`` would fail)."""
    if len(accepted) == 0 or len(boxes) == 0:
        return boxes.new_zeros(len(boxes))
    return box_iou(boxes, accepted).max(dim=1).values


def matched_boxes(boxes: torch.Tensor, references: torch.Tensor, iou: float = 0.5) -> int:
    """How many of ``boxes (n, 4)`` overlap some box of ``references (m, 4)`` by IoU >= ``iou``
    (class-agnostic; none when ``m == 0``)."""
    return int((max_overlap(boxes, references.to(boxes)) >= iou).sum()) if len(references) else 0


def refined_boxes(
    proposals: torch.Tensor,
    logits: torch.Tensor,
    regression: torch.Tensor,
    box_coder,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """``(P, 4)``: each proposal moved by the class-specific regression of its argmax class, or the raw
    proposal where the argmax is background (class 0); clipped to the image."""
    decoded = box_coder.decode(regression, [proposals]).reshape(len(proposals), -1, 4)
    best = logits.argmax(dim=1)
    picked = decoded[torch.arange(len(proposals), device=proposals.device), best]
    out = torch.where((best == 0)[:, None], proposals, picked)
    return clip_boxes_to_image(out, image_size)
