"""Driving a torchvision Faster R-CNN part by part, for what its ``forward`` hides.

``RegionProposalNetwork.forward`` drops the proposals' objectness and ``FasterRCNN.forward`` returns
either losses or detections, never the RoI features. Mean Teacher and LPLD need the teacher's
proposals with objectness, the RoI features and logits of the same boxes from both networks, and
the student's losses, in one pass each. All boxes here are in the model's input pixels: the
detector's transform never rescales (``min_size = max_size = input size``, see ``detector``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.rpn import concat_box_prediction_layers


@dataclass
class TeacherView:
    """What one teacher pass over a batch of weak views gives, per image.

    Attributes:
        proposals: ``B`` tensors ``(P_i, 4)``: RPN proposals after NMS, with
        objectness: ``B`` tensors ``(P_i,)``: their objectness probabilities.
        box_features: ``(sum P_i, D)`` box-head features of the proposals; logits ``(sum P_i, C + 1)``
            (background is class 0) and regression ``(sum P_i, 4 (C + 1))`` from the box predictor.
        detections: ``B`` dicts ``{"boxes" (n, 4), "scores" (n,), "labels" (n,) 1-based}`` after
            the score threshold, per-class NMS and the per-image cap, in INPUT pixels (what the student's
            transform takes as targets: a box goes through the transform once).
        model_boxes: the same detections' boxes in the model's resized frame (that of ``proposals``).
        image_sizes: ``B`` ``(height, width)`` of the images in that frame.
    """

    proposals: list[torch.Tensor]
    objectness: list[torch.Tensor]
    box_features: torch.Tensor
    logits: torch.Tensor
    regression: torch.Tensor
    detections: list[dict]
    model_boxes: list[torch.Tensor]
    image_sizes: list[tuple[int, int]]

    def in_input_pixels(self, boxes: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        """Per image ``(n, 4)`` boxes of the model's frame (``proposals``') -> pixels of the ``(H, W)``
        input."""
        out = []
        for b, (height, width) in zip(boxes, self.image_sizes, strict=True):
            scale = b.new_tensor([size[1] / width, size[0] / height] * 2)
            out.append(b * scale)
        return out


def proposals_with_objectness(model: FasterRCNN, image_list, features: dict) -> tuple[list, list]:
    """The RPN's filtered proposals AND their objectness (what ``rpn.forward`` drops): head, anchors,
    box coder and ``filter_proposals`` driven directly."""
    rpn = model.rpn
    levels = list(features.values())
    objectness, deltas = rpn.head(levels)
    anchors = rpn.anchor_generator(image_list, levels)
    per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
    return rpn.filter_proposals(proposals, objectness, image_list.image_sizes, per_level)


def roi_outputs(model: FasterRCNN, features: dict, boxes: list[torch.Tensor], image_sizes) -> tuple:
    """Box-head features ``(sum n_i, D)``, class logits ``(sum n_i, C + 1)`` and regression of ``boxes``."""
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, boxes, image_sizes)
    box_features = heads.box_head(pooled)
    logits, regression = heads.box_predictor(box_features)
    return box_features, logits, regression


@torch.no_grad()
def teacher_view(model: FasterRCNN, images: torch.Tensor) -> TeacherView:
    """One eval-mode pass of ``model`` over ``images (B, 3, S, S)`` on ``[0, 1]`` (see ``TeacherView``); every
    output in float32 whatever the autocast precision (torchvision refuses bfloat16 target boxes)."""
    originals = [tuple(image.shape[-2:]) for image in images]
    image_list, _ = model.transform(list(images))
    features = model.backbone(image_list.tensors)
    proposals, objectness = proposals_with_objectness(model, image_list, features)
    box_features, logits, regression = (
        x.float() for x in roi_outputs(model, features, proposals, image_list.image_sizes)
    )
    proposals, objectness = [p.float() for p in proposals], [o.float() for o in objectness]
    boxes, scores, labels = model.roi_heads.postprocess_detections(
        logits, regression, proposals, image_list.image_sizes
    )
    resized = [
        {"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels, strict=True)
    ]
    detections = model.transform.postprocess([dict(d) for d in resized], image_list.image_sizes, originals)
    return TeacherView(
        proposals,
        objectness,
        box_features,
        logits,
        regression,
        detections,
        boxes,
        list(image_list.image_sizes),
    )


def student_pass(
    model: FasterRCNN,
    images: torch.Tensor,
    targets: list[dict],
    extra_boxes: list[torch.Tensor] | None = None,
) -> tuple[dict, torch.Tensor | None, torch.Tensor | None]:
    """Train-mode pass of ``model`` over ``images (B, 3, S, S)`` with ``targets`` (``boxes``, 1-based
    ``labels``; an image may have none: all background). Returns (the four standard RPN and RoI
    losses, and for ``extra_boxes`` per image the box-head features ``(sum n_i, D)`` and logits
    ``(sum n_i, C + 1)`` of the same backbone pass, or None)."""
    image_list, targets = model.transform(list(images), targets)
    features = model.backbone(image_list.tensors)
    proposals, rpn_losses = model.rpn(image_list, features, targets)
    _, roi_losses = model.roi_heads(features, proposals, image_list.image_sizes, targets)
    if extra_boxes is None:
        return {**rpn_losses, **roi_losses}, None, None
    box_features, logits, _ = roi_outputs(model, features, extra_boxes, image_list.image_sizes)
    return {**rpn_losses, **roi_losses}, box_features, logits
