"""Detection: the task (box evaluation, COCO detections, overlays, the Mean Teacher's box pseudo-labels)
and its source training.

The network is a torchvision-style two-stage detector (``sfda.models.detector.faster_rcnn``, or a user's
own): in train mode ``network(images, targets) -> losses``, in eval mode ``network(images) ->
detections``, labels 1-based with background 0. Data labels are 0-based (``class_names`` order);
``to_targets`` and ``detect`` convert at the boundary. BatchNorm stays frozen at the source statistics
in adaptation (``FrozenBatchNorm2d``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn

from ..metrics.detection import detection_scores, label_free_box_scores
from ..models import ArtifactError, SourceArtifact
from ..models.deployable import OneImageDetections
from ..models.detector import detector_architecture, faster_rcnn, freeze_batchnorm
from ..models.detector_parts import TeacherView, student_pass, teacher_view
from ..models.keyed_sampling import use_keyed_sampling
from ..pseudo_labels.boxes import confident_detections, matched_boxes
from ..pseudo_labels.passes import Rows
from .base import Task, evaluating
from .evidence import OVERLAYS
from .module import TaskModule
from .optim import Optim
from .source_training import SourceTrainingModule, source_input_spec
from .writers import DetectionWriter
from .writers.detections import write_overlays

# LPLD's optimiser: SGD lr 1e-3 constant, momentum 0.9, weight decay 1e-4
DETECTION_OPTIM = Optim(name="sgd", lr=1e-3, momentum=0.9, nesterov=False, weight_decay=1e-4,
                        backbone_lr_mult=1.0, power=0.0)
DETECTOR_PARTS = ("transform", "backbone", "rpn", "roi_heads")
# an epoch's pseudo-label counts (reporting only): images, those without HPL, and per kind the boxes and
# those matching a reference box (where training batches carry ``report_boxes``)
PSEUDO_COUNTS = ("images", "images_without_hpl", "hpl", "hpl_matched", "lpl", "lpl_matched")


def to_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> list[dict]:
    """Per-image data boxes and 0-based labels -> torchvision targets (labels 1-based)."""
    return [{"boxes": b.float(), "labels": lab + 1} for b, lab in zip(boxes, labels, strict=True)]


def run_seed() -> int:
    """The run's seed (``seed_everything``), which keyed sampling draws from."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def one_input_size(network: torch.nn.Module, where: str) -> torch.nn.Module:
    """Check that ``network`` is a torchvision-style two-stage detector and give its transform ONE size:
    the train-mode transform otherwise picks a random size per batch, and the teacher (eval) and the
    student (train) would see the same image at different sizes (the spec's pitfall)."""
    missing = [part for part in DETECTOR_PARTS if not hasattr(network, part)]
    if missing:
        raise ArtifactError(f"{where or 'model.source'}: {type(network).__name__} is not a torchvision-style "
                            f"detector (it lacks {missing}); expected e.g. torchvision's FasterRCNN")
    sizes = tuple(network.transform.min_size)
    network.transform.min_size = (sizes[-1],)  # the size torchvision's eval mode uses
    return network


@dataclass
class BoxTargets:
    """Mean Teacher's pseudo-labels of one batch: the teacher's view of the weak images and, per image,
    its confident detections ``{"boxes" (n, 4), "labels" (n,) 1-based}`` (the HPL)."""

    view: TeacherView
    targets: list[dict]


class DetectionTask(Task):
    """Validation and test log ``<prefix>/ap50`` (VOC AP at IoU 0.5, area under the curve),
    ``<prefix>/ap50_11pt`` (VOC07 11-point), per class ``<prefix>/ap50/<class>``, COCO ``<prefix>/map`` and
    ``map_50`` where the evaluation images have boxes, and the label-free ``label_free/mean_score`` and
    ``label_free/boxes_per_image``. Every detector it scores keeps ``inference_proposals`` RPN proposals
    (``inference_settings``). Boxes are scored in the model's input pixels of each image or tile.
    ``predict`` writes COCO-format detections and overlays."""

    name = "detection"
    headline = "ap50"
    default_optim = DETECTION_OPTIM
    teacher_defaults = {"confidence": 0.7, "ema_momentum": 0.75, "ema_every": "epoch"}
    inference_proposals = 300  # RPN proposals kept after NMS in eval mode (LPLD's teacher; torchvision 1000)

    def build_network(self, artifact: SourceArtifact) -> torch.nn.Module:
        """The artifact's detector, BatchNorm frozen, one input size, anchor and RoI sampling keyed by
        sample (``key_sampling``)."""
        network = one_input_size(freeze_batchnorm(artifact.build_network()), artifact.origin)
        self.use_keyed_sampling(network)
        return self.inference_settings(network)

    def build_source_network(self, artifact: SourceArtifact) -> torch.nn.Module:
        """The untouched source detector, BatchNorm frozen and scored as the adapted one."""
        return self.inference_settings(freeze_batchnorm(artifact.build_network()))

    def inference_settings(self, network: torch.nn.Module) -> torch.nn.Module:
        """The ONE eval-mode setting of every detector this task scores (source-only, the source model of
        an adaptation run, the student, the teacher): ``inference_proposals`` RPN proposals kept after NMS
        and every objectness (torchvision's MobileNet builders drop objectness < 0.05)."""
        network.rpn.score_thresh = 0.0
        network.rpn._post_nms_top_n = dict(network.rpn._post_nms_top_n, testing=self.inference_proposals)
        return network

    def use_keyed_sampling(self, network: torch.nn.Module) -> None:
        """Make ``network``'s anchor and RoI sampling depend on the global sample index
        (``sfda.models.keyed_sampling``)."""
        self.samplers = use_keyed_sampling(network)

    def key_sampling(self, module: TaskModule, index: torch.Tensor) -> None:
        for sampler in getattr(self, "samplers", []):
            sampler.set_keys(index, run_seed(), module.global_step)

    @torch.no_grad()
    def detect(self, module: TaskModule, images: torch.Tensor, network: torch.nn.Module) -> list[dict]:
        """``images (B, 3, S, S)`` -> per image ``{"boxes" (n, 4), "scores" (n,), "labels" (n,) 0-based}``."""
        with evaluating(network), module.trainer.precision_plugin.forward_context():
            outputs = network(list(images))
        return [{"boxes": o["boxes"].float(), "scores": o["scores"].float(), "labels": o["labels"] - 1}
                for o in outputs]

    # evaluation -------------------------------------------------------------------------------------------
    def evaluation_rows(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> Rows:
        """Per-image rows: the detections and the reference boxes (lists of per-image tensors)."""
        detections = self.detect(module, batch["image"], network)
        return {
            "boxes": [d["boxes"] for d in detections],
            "scores": [d["scores"] for d in detections],
            "labels": [d["labels"] for d in detections],
            "ref_boxes": [b.float() for b in batch["boxes"]],
            "ref_labels": list(batch["labels"]),
            "ref_ignored": list(batch["ignored"]),
            "labelled": batch["labelled"].long(),
        }

    def score_rows(self, module: TaskModule, rows: Rows, prefix: str, label_free: bool = True
                   ) -> dict[str, float]:
        """Scores of gathered rows (identical on every process): ``<prefix>/...`` and ``label_free/...``."""
        predictions = [{"boxes": b, "scores": s, "labels": lab}
                       for b, s, lab in zip(rows["boxes"], rows["scores"], rows["labels"], strict=True)]
        labelled = rows["labelled"].bool().tolist()
        references = [{"boxes": b, "labels": lab, "iscrowd": crowd}
                      for b, lab, crowd in zip(rows["ref_boxes"], rows["ref_labels"], rows["ref_ignored"],
                                               strict=True)]
        scored = [(p, r) for p, r, keep in zip(predictions, references, labelled, strict=True) if keep]
        out = {f"label_free/{k}": v for k, v in label_free_box_scores(predictions).items()}
        if scored:
            values = detection_scores([p for p, _ in scored], [r for _, r in scored], self.names)
            out.update({f"{prefix}/{k}": v for k, v in values.items()})
        return out

    # predictions ------------------------------------------------------------------------------------------
    def predict(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> dict:
        """The detections and, where the module has a source network, the source model's (overlays)."""
        out = {"index": batch["index"], "window": batch["window"], "scale": batch["scale"],
               "image": batch["image"], "detections": self.detect(module, batch["image"], network)}
        source = module.source_network()
        if source is not None:
            out["source_detections"] = self.detect(module, batch["image"], source)
        return out

    @classmethod
    def writers(cls, module: TaskModule) -> list:
        """COCO-format ``detections.json`` and PNG overlays for ``sfda predict``."""
        return [DetectionWriter()]

    # deployment -------------------------------------------------------------------------------------------
    export_outputs = ("boxes", "labels", "scores")
    export_batch_dynamic = False  # torchvision's detectors take a list of images: traced for one

    def deployable(self, network: torch.nn.Module) -> torch.nn.Module:
        """One image in, its post-processed detections out (``OneImageDetections``)."""
        return OneImageDetections(network)

    def deployment_spec(self, module: TaskModule) -> dict:
        """The base spec with the detector's inference settings (what a network rebuilt from safetensors
        weights must be given to predict as the export does)."""
        spec = super().deployment_spec(module)
        network = module.evaluated_network()
        spec["inference_settings"] = {
            "rpn_post_nms_top_n_test": int(network.rpn._post_nms_top_n["testing"]),
            "rpn_score_thresh": float(network.rpn.score_thresh),
            "box_score_thresh": float(network.roi_heads.score_thresh),
            "box_nms_thresh": float(network.roi_heads.nms_thresh),
            "box_detections_per_img": int(network.roi_heads.detections_per_img),
            "min_size": int(network.transform.min_size[-1]), "max_size": int(network.transform.max_size)}
        spec["image"] = ("float32 (1, 3, S, S), S = input.size: RGB pixels scaled to [0, 1] (a tile of "
                         "input.size pixels); the network normalises with input.mean and input.std itself")
        spec["outputs"] = {"boxes": "(n, 4) x1, y1, x2, y2 in the input's pixels",
                           "labels": "(n,) 0-based index into class_names",
                           "scores": "(n,) confidence, at most box_detections_per_img boxes scoring "
                                     "above box_score_thresh after NMS (inference_settings)"}
        return spec

    def report_evidence(self, module: TaskModule, folder: Path | None) -> None:
        """``overlays/*.png`` of the first ``OVERLAYS`` evaluation images for ``sfda report``: source-only,
        adapted and the reference boxes, drawn as ``sfda predict`` draws them (rank 0 only)."""
        if folder is None:
            return
        batch = module.first_evaluation_items(OVERLAYS)
        prediction = module.predict_step(batch, 0)
        references = [{"boxes": b, "scores": torch.ones(len(b))} for b in batch["boxes"]]
        write_overlays(prediction, prediction.pop("image"), module.trainer.datamodule, folder / "overlays",
                       references, split="val")

    # Mean Teacher ---------------------------------------------------------------------------------------
    def prepare_teacher(self, network: torch.nn.Module, proposals: int | None) -> None:
        """A recipe's ``teacher_proposals`` (None: keep ``inference_proposals``) becomes the count of every
        network of the run: ``network`` (the student, before the teacher is copied from it) and the source
        model built later."""
        if proposals is not None:
            self.inference_proposals = proposals
        self.inference_settings(network)

    def teacher_targets(self, module: TaskModule, teacher: torch.nn.Module, batch: dict,
                        confidence: float) -> BoxTargets:
        """The teacher's view of the weak images; detections scoring above ``confidence`` are the HPL
        (counted for ``teacher_epoch_end``)."""
        with module.trainer.precision_plugin.forward_context():
            view = teacher_view(teacher, batch["image"])
        targets = confident_detections(view.detections, confidence)
        counts = self.pseudo_counts()
        counts["images"] += len(targets)
        counts["images_without_hpl"] += sum(len(t["boxes"]) == 0 for t in targets)
        self.count_pseudo_boxes(module, "hpl", [t["boxes"] for t in targets])
        return BoxTargets(view, targets)

    def pseudo_counts(self) -> dict[str, int]:
        """This epoch's counts (``PSEUDO_COUNTS``) so far on this process."""
        if not hasattr(self, "_pseudo_counts"):
            self._pseudo_counts = dict.fromkeys(PSEUDO_COUNTS, 0)
        return self._pseudo_counts

    def count_pseudo_boxes(self, module: TaskModule, kind: str, boxes: list[torch.Tensor]) -> None:
        """Count per image ``boxes (n, 4)`` (input pixels) of pseudo-label ``kind`` ("hpl", "lpl") and those
        with IoU >= 0.5 with a reference box, where the training batch carries references
        (``module.reporting_references``): a diagnostic, never a loss."""
        references = module.reporting_references()
        if references is None:
            return
        counts = self.pseudo_counts()
        for found, reference in zip(boxes, references, strict=True):
            counts[kind] += len(found)
            counts[f"{kind}_matched"] += matched_boxes(found, reference)

    def teacher_epoch_end(self, module: TaskModule, confidence: float) -> None:
        """Log the epoch's pseudo-label precision over every process, ``train/hpl_precision`` and
        ``train/lpl_precision`` (matched boxes / boxes, where references were carried), and warn once, with
        the counts, when the teacher gave no HPL on some images (they trained as all background) or,
        louder, on all of them. The counts start again."""
        counts = self.pseudo_counts()
        local = torch.tensor([counts[k] for k in PSEUDO_COUNTS], dtype=torch.float64, device=module.device)
        total = dict(zip(PSEUDO_COUNTS, module.trainer.strategy.reduce(local, reduce_op="sum").tolist(),
                         strict=True))
        del self._pseudo_counts
        for kind in ("hpl", "lpl"):
            if total[kind]:
                module.log(f"train/{kind}_precision", total[f"{kind}_matched"] / total[kind])
        images, without, epoch = int(total["images"]), int(total["images_without_hpl"]), module.current_epoch
        if images and without == images:
            rank_zero_warn(f"epoch {epoch + 1}: the teacher gave NO box scoring above model.confidence "
                           f"{confidence} on ANY of the {images} target images: the student trained on "
                           "background only. Lower model.confidence or check the source model")
        elif without:
            rank_zero_warn(f"epoch {epoch + 1}: the teacher gave no box scoring above model.confidence "
                           f"{confidence} on {without} of {images} target images; they trained as all "
                           "background")

    def student_loss(self, module: TaskModule, batch: dict, targets: BoxTargets
                     ) -> tuple[torch.Tensor, dict, tuple]:
        """The four Faster R-CNN losses of the student on the strong view against the HPL (an image without
        HPL trains as all background), and the student's RoI ``(features, logits)`` of the boxes the method
        asks for (``module.student_boxes``)."""
        self.key_sampling(module, batch["index"])
        losses, features, logits = student_pass(module.network, batch["strong"], targets.targets,
                                                module.student_boxes(targets.view))
        per_image = sum(len(t["boxes"]) for t in targets.targets) / len(targets.targets)
        return sum(losses.values()), {"train/hpl_per_image": per_image}, (features, logits)


class DetectionSourceTraining(SourceTrainingModule):
    """Train a torchvision Faster R-CNN on labelled source boxes (the four standard RPN and RoI losses)
    and write the detection artifact from the epoch with the best source-validation AP50.

    Args:
        backbone: 'efficientnet_lite0_fpn' (with ``detector.backbone_weights: imagenet``, the recipes'
            default: real ImageNet weights), 'resnet18_fpn', 'resnet50_fpn' or 'mobilenet_v3_fpn' (random
            init), or the other ``sfda.models.detector.BACKBONES``.
        detector: further ``faster_rcnn`` arguments (``backbone_weights``, ``frozen_bn``,
            ``frozen_stages``, ``fpn_channels``, ``levels``, ``anchor_scale``, ``representation_size``,
            ``rois_per_image``, ``proposals_per_image``); see ``sfda.models.detector``.
        artifact, overwrite_artifact: see ``SourceTrainingModule``.
        optim: SGD lr 0.01, momentum 0.9, weight decay 1e-4, constant (Faster R-CNN's usual settings
            at a small batch); the recipes add gradient clipping for training from scratch.
    """

    tasks = ("detection",)
    task_class = DetectionTask
    best_metric = "source_val/ap50"

    def __init__(self, backbone: str = "resnet18_fpn", detector: dict | None = None,
                 artifact: str | None = None, overwrite_artifact: bool = False, optim: Optim | None = None):
        super().__init__(artifact, overwrite_artifact,
                         optim or Optim(name="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=1e-4,
                                        backbone_lr_mult=1.0, power=0.0))
        self.backbone_name, self.detector_kwargs = backbone, dict(detector or {})

    def configure_model(self) -> None:
        if self.network is not None:
            return
        dm = self.trainer.datamodule
        spec = source_input_spec(dm, "size, mean, std")
        dm.setup()
        kwargs = dict(self.detector_kwargs)
        weights = kwargs.pop("backbone_weights", None)  # the artifact's state dict holds them afterwards
        self.architecture = detector_architecture(dm.num_classes, spec.size, spec.mean, spec.std,
                                                  backbone=self.backbone_name, **kwargs)
        self.network = faster_rcnn(**self.architecture["kwargs"], backbone_weights=weights)
        self.task = DetectionTask(dm.class_names, spec)
        self.task.use_keyed_sampling(self.network)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.task.key_sampling(self, batch["index"])
        losses = self.network(list(batch["image"]), to_targets(batch["boxes"], batch["labels"]))
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True)
        return loss
