"""LPLD: Low-confidence Pseudo Label Distillation (Yoon et al., ECCV 2024) on torchvision Faster R-CNN."""

from __future__ import annotations

from typing import Literal

import torch

from ..losses.detection import lpl_class_targets, lpld_distillation
from ..models import SourceModel
from ..models.detector_parts import TeacherView
from ..pseudo_labels.boxes import max_overlap, refined_boxes
from ..tasks.detection import BoxTargets
from ..tasks.optim import Optim
from .mean_teacher import MeanTeacher


class LPLD(MeanTeacher):
    """Mean Teacher plus distillation of low-confidence pseudo-labels (method note:
    ``docs/methods/lpld.md``).

    The teacher's RPN proposals (top ``teacher_proposals`` after NMS, objectness kept, no score
    threshold) are refined by the teacher's class-specific regression of their argmax class (raw
    where that is background). A proposal is a low-confidence pseudo-label (LPL) candidate when its
    refined box overlaps no HPL by more than ``max_iou`` (images without HPL are skipped); it is kept
    when the teacher's foreground-only softmax peaks at ``min_foreground`` or more and its background
    probability is at most ``max_background``. The student's RoI outputs for the same proposals on the
    strong view are pulled towards the teacher's class relation:
    ``L_LPLD = weight * mean_j (1 - cos(f_S, f_T)) KL(t_j || p_j)``.
    Logged per step: ``train/hpl_per_image``, ``train/lpl_candidates``, ``train/lpl_kept``, ``train/lpld``;
    per epoch, where the target set has boxes (reporting only), ``train/hpl_precision`` and
    ``train/lpl_precision``: the fraction of HPL and of kept LPL (proposals) with IoU >= 0.5 with a box.

    Args:
        weight: of the LPLD loss (0.1).
        max_iou: largest IoU of an LPL with any HPL (0.4).
        min_foreground: least foreground-relation peak (0.9).
        max_background: largest background probability (0.99).
        (confidence, ema_momentum, ema_every, teacher_proposals: see ``MeanTeacher``)
    """

    tasks = ("detection",)

    def __init__(
        self,
        source: SourceModel,
        weight: float = 0.1,
        max_iou: float = 0.4,
        min_foreground: float = 0.9,
        max_background: float = 0.99,
        confidence: float = 0.7,
        ema_momentum: float = 0.75,
        ema_every: Literal["epoch", "step"] = "epoch",
        teacher_proposals: int = 300,
        optim: Optim | None = None,
        evaluate_source: bool = True,
    ):
        super().__init__(source, confidence=confidence, ema_momentum=ema_momentum, ema_every=ema_every,
                         teacher_proposals=teacher_proposals, optim=optim, evaluate_source=evaluate_source)
        for name, value in (
            ("max_iou", max_iou),
            ("min_foreground", min_foreground),
            ("max_background", max_background),
        ):
            if not 0 <= value <= 1:
                raise ValueError(f"model.{name}: expected a value in [0, 1], got {value}")
        if weight < 0:
            raise ValueError(f"model.weight: expected >= 0, got {weight}")
        self.weight, self.max_iou = weight, max_iou
        self.min_foreground, self.max_background = min_foreground, max_background

    def student_boxes(self, view: TeacherView) -> list[torch.Tensor]:
        return view.proposals

    def lpl_mask(self, view: TeacherView) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sum P_i,)`` masks over the teacher's proposals: LPL candidates (IoU filter against the HPL in
        the model's frame; images without HPL give none) and kept LPLs (also the class-relation filter);
        and the relation targets ``(sum P_i, C + 1)``."""
        candidates, start = [], 0
        coder = self.teacher.model.roi_heads.box_coder
        for i, proposals in enumerate(view.proposals):
            rows = slice(start, start + len(proposals))
            start += len(proposals)
            hpl = view.model_boxes[i][view.detections[i]["scores"] > self.confidence]
            if len(hpl) == 0:
                candidates.append(torch.zeros(len(proposals), dtype=torch.bool, device=proposals.device))
                continue
            refined = refined_boxes(
                proposals, view.logits[rows], view.regression[rows], coder, view.image_sizes[i]
            )
            candidates.append(max_overlap(refined, hpl) <= self.max_iou)
        relation, confident = lpl_class_targets(view.logits, self.min_foreground, self.max_background)
        candidate = torch.cat(candidates)
        return candidate, candidate & confident, relation

    def extra_loss(self, batch: dict, targets: BoxTargets, outputs: tuple) -> torch.Tensor:
        features, logits = outputs
        view = targets.view
        candidate, kept, relation = self.lpl_mask(view)
        loss = lpld_distillation(relation[kept], logits[kept], view.box_features[kept], features[kept])
        images = len(targets.targets)
        per_image = kept.split([len(p) for p in view.proposals])
        lpl = [p[k] for p, k in zip(view.proposals, per_image, strict=True)]
        self.task.count_pseudo_boxes(self, "lpl", view.in_input_pixels(lpl, batch["image"].shape[-2:]))
        self.log_dict(
            {
                "train/lpl_candidates": candidate.sum().float() / images,
                "train/lpl_kept": kept.sum().float() / images,
                "train/lpld": loss.detach(),
            }
        )
        return self.weight * loss
