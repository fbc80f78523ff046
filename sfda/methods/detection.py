"""Detection LightningModules: evaluation, predictions and writers shared by all, and source training.

The network is a torchvision-style detector (``sfda.models.detector.faster_rcnn``, or a user's own):
in train mode ``network(images, targets) -> losses``, in eval mode ``network(images) -> detections``,
labels 1-based with background 0. Data labels are 0-based (``class_names`` order); ``to_targets`` and
``detect`` convert at the boundary.
"""

from __future__ import annotations

import os

import torch

from ..detection_writer import DetectionWriter
from ..metrics.detection import detection_scores, label_free_box_scores
from ..models.detector import detector_architecture, faster_rcnn
from ..models.keyed_sampling import use_keyed_sampling
from .artifact_output import KeepsBestWeights, WritesSourceArtifact, source_input_spec
from .base import Optim
from .gathered_evaluation import GatheredEvaluation
from .task import TaskModule

# LPLD's optimiser: SGD lr 1e-3 constant, momentum 0.9, weight decay 1e-4
DETECTION_OPTIM = Optim(
    name="sgd", lr=1e-3, momentum=0.9, nesterov=False, weight_decay=1e-4, backbone_lr_mult=1.0, power=0.0
)


def to_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> list[dict]:
    """Per-image data boxes and 0-based labels -> torchvision targets (labels 1-based)."""
    return [{"boxes": b.float(), "labels": lab + 1} for b, lab in zip(boxes, labels, strict=True)]


def run_seed() -> int:
    """The run's seed (``seed_everything``), which keyed sampling draws from."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class DetectionTask(GatheredEvaluation, TaskModule):
    """Evaluation on boxes, shared by source training and adaptation.

    Validation and test log ``<eval_prefix>/ap50`` (VOC AP at IoU 0.5, area under the curve),
    ``<eval_prefix>/ap50_11pt`` (VOC07 11-point), per class ``<eval_prefix>/ap50/<class>``, COCO
    ``<eval_prefix>/map`` and ``map_50`` where the evaluation images have boxes, and the label-free
    ``label_free/mean_score`` and ``label_free/boxes_per_image``. Boxes are scored in the model's input
    pixels of each image or tile. ``predict`` writes COCO-format detections and overlays.
    """

    eval_prefix = "target"
    default_optim = DETECTION_OPTIM
    network: torch.nn.Module

    def build_metrics(self, class_names: list[str]) -> None:
        self.class_names, self.num_classes = list(class_names), len(class_names)

    def eval_network(self) -> torch.nn.Module:
        """The network that is evaluated and predicts (Mean Teacher methods: the teacher)."""
        return self.network

    def use_keyed_sampling(self, network: torch.nn.Module) -> None:
        """Make ``network``'s anchor and RoI sampling depend on the global sample index
        (``sfda.models.keyed_sampling``)."""
        self.samplers = use_keyed_sampling(network)

    def key_sampling(self, index: torch.Tensor) -> None:
        for sampler in getattr(self, "samplers", []):
            sampler.set_keys(index, run_seed(), self.global_step)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, network: torch.nn.Module | None = None) -> list[dict]:
        """``images (B, 3, S, S)`` -> per image ``{"boxes" (n, 4), "scores" (n,), "labels" (n,) 0-based}``."""
        network = network or self.eval_network()
        was_training = network.training
        network.eval()
        with self.trainer.precision_plugin.forward_context():
            outputs = network(list(images))
        network.train(was_training)
        return [
            {"boxes": o["boxes"].float(), "scores": o["scores"].float(), "labels": o["labels"] - 1}
            for o in outputs
        ]

    def evaluation_rows(self, batch: dict, network: torch.nn.Module | None = None) -> dict:
        """Per-image rows of an evaluation pass: the detections and the reference boxes."""
        detections = self.detect(batch["image"], network)
        return {
            "boxes": [d["boxes"] for d in detections],
            "scores": [d["scores"] for d in detections],
            "labels": [d["labels"] for d in detections],
            "ref_boxes": [b.float() for b in batch["boxes"]],
            "ref_labels": list(batch["labels"]),
            "ref_ignored": list(batch["ignored"]),
            "labelled": batch["labelled"].long(),
        }

    def score_rows(self, rows: dict, prefix: str) -> dict[str, float]:
        """Scores of gathered rows (identical on every process): ``<prefix>/...`` and ``label_free/...``."""
        predictions = [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(rows["boxes"], rows["scores"], rows["labels"], strict=True)
        ]
        labelled = rows["labelled"].bool().tolist()
        references = [
            {"boxes": b, "labels": lab, "iscrowd": crowd}
            for b, lab, crowd in zip(rows["ref_boxes"], rows["ref_labels"], rows["ref_ignored"], strict=True)
        ]
        scored = [(p, r) for p, r, keep in zip(predictions, references, labelled, strict=True) if keep]
        out = {f"label_free/{k}": v for k, v in label_free_box_scores(predictions).items()}
        if scored:
            values = detection_scores([p for p, _ in scored], [r for _, r in scored], self.class_names)
            out.update({f"{prefix}/{k}": v for k, v in values.items()})
        return out

    def configure_callbacks(self) -> list:
        """The task's writers: COCO-format ``detections.json`` and PNG overlays for ``sfda predict``."""
        return [DetectionWriter()]

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {
            "index": batch["index"],
            "window": batch["window"],
            "scale": batch["scale"],
            "image": batch["image"],
            "detections": self.detect(batch["image"]),
        }


class DetectionSourceTraining(KeepsBestWeights, WritesSourceArtifact, DetectionTask):
    """Train a torchvision Faster R-CNN on labelled source boxes (the four standard RPN and RoI losses)
    and write the detection artifact from the epoch with the best source-validation AP50.

    Args:
        backbone: 'resnet18_fpn' (CPU default), 'resnet50_fpn' or 'mobilenet_v3_fpn' (random init).
        detector: further ``faster_rcnn`` arguments (``fpn_channels``, ``levels``, ``anchor_scale``,
            ``representation_size``, ``rois_per_image``, ``proposals_per_image``); see
            ``sfda.models.detector``.
        artifact, overwrite_artifact: see ``sfda.methods.artifact_output``.
        optim: SGD lr 0.01, momentum 0.9, weight decay 1e-4, constant (Faster R-CNN's usual settings
            at a small batch); the recipes add gradient clipping for training from scratch.
    """

    eval_prefix = "source_val"
    best_metric = "source_val/ap50"

    def __init__(
        self,
        backbone: str = "resnet18_fpn",
        detector: dict | None = None,
        artifact: str | None = None,
        overwrite_artifact: bool = False,
        optim: Optim | None = None,
    ):
        super().__init__(
            optim
            or Optim(
                name="sgd",
                lr=0.01,
                momentum=0.9,
                nesterov=False,
                weight_decay=1e-4,
                backbone_lr_mult=1.0,
                power=0.0,
            )
        )
        self.backbone_name, self.detector_kwargs = backbone, dict(detector or {})
        self.artifact_path, self.overwrite_artifact = artifact, overwrite_artifact
        self.network = None

    def configure_model(self) -> None:
        if self.network is not None:
            return
        dm = self.trainer.datamodule
        spec = source_input_spec(dm, "size, mean, std")
        dm.setup()
        self.architecture = detector_architecture(
            dm.num_classes,
            spec.size,
            spec.mean,
            spec.std,
            backbone=self.backbone_name,
            **self.detector_kwargs,
        )
        self.network = faster_rcnn(**self.architecture["kwargs"])
        self.use_keyed_sampling(self.network)
        self.build_metrics(dm.class_names)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.key_sampling(batch["index"])
        losses = self.network(list(batch["image"]), to_targets(batch["boxes"], batch["labels"]))
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_end(self) -> None:
        self.write_best_source_artifact("detection", self.trainer.datamodule.class_names)
