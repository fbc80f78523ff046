"""Detection adaptation: the base (detector artifact, checks, frozen BatchNorm, source-only AP),
``DetectionSourceOnly``, and the Mean Teacher baseline that LPLD extends."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from ..detection_writer import write_overlays
from ..models import ArtifactError, SourceModel, load_source
from ..models.detector import freeze_batchnorm
from ..models.detector_parts import TeacherView, student_pass, teacher_view
from ..pseudo_labels import EMATeacher
from ..pseudo_labels.boxes import confident_detections
from ..report.evidence import OVERLAYS
from .base import Optim, SourceAdaptation
from .detection import DetectionTask
from .gathered_evaluation import ScoresSourceNetwork
from .source_only import ScoresTheSourceModel

DETECTOR_PARTS = ("transform", "backbone", "rpn", "roi_heads")


def one_input_size(network: torch.nn.Module, where: str) -> torch.nn.Module:
    """Check that ``network`` is a torchvision-style two-stage detector and give its transform ONE size:
    the train-mode transform otherwise picks a random size per batch, and the teacher (eval) and the
    student (train) would see the same image at different sizes (the spec's pitfall)."""
    missing = [part for part in DETECTOR_PARTS if not hasattr(network, part)]
    if missing:
        raise ArtifactError(
            f"{where or 'model.source'}: {type(network).__name__} is not a torchvision-style "
            f"detector (it lacks {missing}); expected e.g. torchvision's FasterRCNN"
        )
    sizes = tuple(network.transform.min_size)
    network.transform.min_size = (sizes[-1],)  # the size torchvision's eval mode uses
    return network


class DetectionAdaptation(ScoresSourceNetwork, SourceAdaptation, DetectionTask):
    """Base of detection adaptation: loads a detection artifact (``DetectionSourceTraining`` writes one),
    checks class names and input spec against the target data, freezes BatchNorm at the source
    statistics (``FrozenBatchNorm2d``), and measures source-only AP before the first step.

    Args:
        source: path of a detection artifact, or ``{path, architecture}`` for one of a detector class
            from outside sfda that you trust.
        optim: SGD lr 1e-3 constant, momentum 0.9, weight decay 1e-4 (LPLD's).
        evaluate_source: measure ``source_only/ap50`` (and the rest) at fit start.
    """

    source_only_key = "source_only/ap50"

    def __init__(self, source: SourceModel, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(optim)
        self.artifact = load_source(source)
        if self.artifact.task != "detection":
            raise ArtifactError(
                f"model.source: {self.artifact.origin or source} is a '{self.artifact.task}' "
                "artifact; a detection method needs one written by DetectionSourceTraining"
            )
        self.network = one_input_size(freeze_batchnorm(self.artifact.build_network()), self.artifact.origin)
        self.use_keyed_sampling(self.network)
        self.evaluate_source = evaluate_source
        self.build_metrics(self.artifact.class_names)

    def build_source_network(self) -> torch.nn.Module:
        """The untouched source detector, BatchNorm frozen as the adapted one's."""
        return freeze_batchnorm(self.artifact.build_network())

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """This model's detections and, for the before/after overlays, the source model's."""
        out = super().predict_step(batch, batch_idx)
        out["source_detections"] = self.detect(batch["image"], self.source_network())
        return out

    def report_evidence(self, folder: Path | None) -> None:
        """``overlays/*.png`` of the first ``OVERLAYS`` evaluation images for ``sfda report``: source-only,
        adapted and the reference boxes, drawn as ``sfda predict`` draws them (rank 0 only)."""
        if folder is None:
            return
        batch = self.first_evaluation_items(OVERLAYS)
        prediction = self.predict_step(batch, 0)
        references = [{"boxes": b, "scores": torch.ones(len(b))} for b in batch["boxes"]]
        write_overlays(prediction, prediction.pop("image"), self.trainer.datamodule, folder / "overlays",
                       references, split="val")


class DetectionSourceOnly(ScoresTheSourceModel, DetectionAdaptation):
    """The source detector as is: ``sfda test`` / ``sfda predict`` only (no training step)."""


class MeanTeacherDetection(DetectionAdaptation):
    """Mean Teacher for source-free detection (LPLD's "MT" baseline).

    Per step: the EMA teacher (always in eval mode) detects on the weak view; detections with score
    above ``confidence`` are the high-confidence pseudo-labels (HPL); the student is trained on the
    strong view of the same geometry with the standard Faster R-CNN losses against the HPL (an image
    without HPL trains as all background). The teacher follows the student by EMA over parameters
    and buffers, at each epoch end (LPLD: ``0.75 teacher + 0.25 student``) or each step. The teacher
    is the evaluated and predicting model, as in the official code.

    Args:
        confidence: HPL score threshold (0.7).
        ema_momentum: teacher share kept at each update (0.75 per epoch; ~0.999 per step).
        ema_every: 'epoch' or 'step'.
        teacher_proposals: RPN proposals the teacher keeps after NMS (300).
        (source, optim, evaluate_source: see ``DetectionAdaptation``)
    """

    needs_strong_view = True  # the datamodule yields "strong" beside the weak "image"

    def __init__(
        self,
        source: SourceModel,
        confidence: float = 0.7,
        ema_momentum: float = 0.75,
        ema_every: Literal["epoch", "step"] = "epoch",
        teacher_proposals: int = 300,
        optim: Optim | None = None,
        evaluate_source: bool = True,
    ):
        super().__init__(source, optim, evaluate_source)
        if not 0 <= confidence < 1:
            raise ValueError(f"model.confidence: expected a score threshold in [0, 1), got {confidence}")
        if ema_every not in ("epoch", "step"):
            raise ValueError(f"model.ema_every: expected 'epoch' or 'step', got {ema_every!r}")
        if teacher_proposals < 1:
            raise ValueError(f"model.teacher_proposals: expected a positive count, got {teacher_proposals}")
        self.confidence, self.ema_every = confidence, ema_every
        self.teacher = EMATeacher(self.network, ema_momentum)
        self.teacher.model.rpn.score_thresh = 0.0  # torchvision's MobileNet builders drop objectness < 0.05
        self.teacher.model.rpn._post_nms_top_n = dict(
            self.teacher.model.rpn._post_nms_top_n, testing=teacher_proposals
        )

    def eval_network(self) -> torch.nn.Module:
        return self.teacher.model

    def extra_loss(
        self, batch: dict, view: TeacherView, targets: list[dict], student: tuple
    ) -> torch.Tensor | None:
        """A further loss term from the teacher's view and the student's RoI outputs (LPLD); none here."""
        return None

    def student_boxes(self, view: TeacherView) -> list[torch.Tensor] | None:
        """Boxes whose student RoI outputs ``extra_loss`` needs (LPLD: the teacher's proposals)."""
        return None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.teacher.model.eval()  # Lightning puts every submodule in train mode at each epoch start
        with self.trainer.precision_plugin.forward_context():
            view = teacher_view(self.teacher.model, batch["image"])
        targets = confident_detections(view.detections, self.confidence)
        self.key_sampling(batch["index"])
        losses, features, logits = student_pass(
            self.network, batch["strong"], targets, self.student_boxes(view)
        )
        loss = sum(losses.values())
        extra = self.extra_loss(batch, view, targets, (features, logits))
        if extra is not None:
            loss = loss + extra
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/hpl_per_image", sum(len(t["boxes"]) for t in targets) / len(targets))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema_every == "step":
            self.teacher.update(self.network)

    def on_train_epoch_end(self) -> None:
        if self.ema_every == "epoch":
            self.teacher.update(self.network)
