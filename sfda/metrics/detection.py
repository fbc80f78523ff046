"""Detection metrics: Pascal VOC AP at IoU 0.5 (VOC07 11-point and area under the curve), per class
and mean, and COCO mAP through torchmetrics.

Inputs are per image: predictions ``{"boxes" (n, 4), "scores" (n,), "labels" (n,)}`` and references
``{"boxes" (m, 4), "labels" (m,)[, "iscrowd" (m,)]}`` with 0-based class ids; ``iscrowd`` marks
regions that evaluation ignores (COCO crowd, VOC difficult). Under DDP the caller gathers one row per
image first (``sfda.pseudo_labels.passes.collect_rows``), so every process scores the same full set.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def average_precision(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    """VOC AP of a precision-recall curve: the VOC07 11-point mean, or the area under the
    monotone (interpolated) curve as in VOC2010+."""
    if eleven_point:
        return float(
            np.mean(
                [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
            )
        )
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def ignored_of(reference: dict) -> torch.Tensor:
    """``(m,) bool``: the reference boxes evaluation ignores (``iscrowd``; none when absent)."""
    flags = reference.get("iscrowd")
    return torch.zeros(len(reference["labels"]), dtype=torch.bool) if flags is None else flags.bool().cpu()


def class_pr(predictions: list[dict], references: list[dict], cls: int, iou: float) -> tuple | None:
    """Recall and precision of class ``cls`` over all images, detections sorted by score and matched
    greedily to unmatched references with IoU >= ``iou``; None when the class has no reference.
    A detection whose best match is an ignored reference (``iscrowd``) counts neither way, as VOC
    treats "difficult" boxes; ignored references are not counted in the recall."""
    total = sum(int(((ref["labels"].cpu() == cls) & ~ignored_of(ref)).sum()) for ref in references)
    if total == 0:
        return None
    scored = []
    for image, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        mine = pred["labels"] == cls
        of_class = ref["labels"].cpu() == cls
        truth = ref["boxes"].cpu()[of_class]
        overlaps = box_iou(pred["boxes"][mine].float().cpu(), truth.float()) if len(truth) else None
        for row, score in enumerate(pred["scores"][mine].tolist()):
            scored.append((score, image, overlaps[row] if overlaps is not None else None))
    scored.sort(key=lambda s: -s[0])
    ignored = [ignored_of(ref)[ref["labels"].cpu() == cls] for ref in references]
    used: dict[int, set] = {}
    hits = []
    for _, image, overlap in scored:
        best = int(overlap.argmax()) if overlap is not None else -1
        if best >= 0 and overlap[best] >= iou and bool(ignored[image][best]):
            continue  # on an ignored region: neither a true nor a false positive
        hit = best >= 0 and overlap[best] >= iou and best not in used.setdefault(image, set())
        if hit:
            used[image].add(best)
        hits.append(float(hit))
    true_pos = np.cumsum(hits)
    recall = true_pos / total
    precision = true_pos / np.arange(1, len(hits) + 1)
    return recall, precision


def voc_scores(
    predictions: list[dict], references: list[dict], class_names: list[str], iou: float = 0.5
) -> dict[str, float]:
    """``ap50`` (area), ``ap50_11pt`` (VOC07) as the mean over classes with references, and
    ``ap50/<class>``, ``ap50_11pt/<class>`` per class."""
    out: dict[str, float] = {}
    for cls, name in enumerate(class_names):
        curve = class_pr(predictions, references, cls, iou)
        if curve is None:
            continue
        out[f"ap50/{name}"] = average_precision(*curve, eleven_point=False) if len(curve[0]) else 0.0
        out[f"ap50_11pt/{name}"] = average_precision(*curve, eleven_point=True) if len(curve[0]) else 0.0
    for key in ("ap50", "ap50_11pt"):
        values = [v for k, v in out.items() if k.startswith(key + "/")]
        if values:
            out[key] = float(np.mean(values))
    return out


def coco_scores(predictions: list[dict], references: list[dict]) -> dict[str, float]:
    """COCO ``map`` (IoU 0.5:0.95) and ``map_50`` from torchmetrics' ``MeanAveragePrecision``."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", sync_on_compute=False)
    metric.update(
        [{k: v.cpu() for k, v in p.items()} for p in predictions],
        [{k: v.cpu() for k, v in r.items()} for r in references],
    )
    values = metric.compute()
    return {"map": float(values["map"]), "map_50": float(values["map_50"])}


def detection_scores(
    predictions: list[dict], references: list[dict], class_names: list[str]
) -> dict[str, float]:
    """VOC AP50 (both kinds, per class and mean) and COCO mAP of the images that have references."""
    if not any(len(ref["labels"]) for ref in references):
        return {}
    return {**voc_scores(predictions, references, class_names), **coco_scores(predictions, references)}


def label_free_box_scores(predictions: list[dict]) -> dict[str, float]:
    """Label-free summaries: ``mean_score`` of all detections and ``boxes_per_image``."""
    scores = torch.cat([p["scores"].float().cpu() for p in predictions]) if predictions else torch.zeros(0)
    return {
        "mean_score": float(scores.mean()) if len(scores) else 0.0,
        "boxes_per_image": len(scores) / max(1, len(predictions)),
    }
