"""Pose LightningModules: heatmap evaluation, predictions and writers shared by all, and source training.

The network maps person crops ``(B, C, S, S)`` to heatmaps ``(B, K, h, w)``, one per joint (SimpleBaseline
by default, or a user's own heatmap model). Keypoints of the data are in input pixels; scores are
computed on heatmap argmaxes in heatmap pixels.
"""

from __future__ import annotations

import torch

from ..data.pose_views import PADDING
from ..losses.pose import joints_mse
from ..metrics.pose import PCK
from ..models.pose import pose_architecture, simple_baseline
from ..pose_writer import PoseWriter
from ..pseudo_labels.heatmaps import heatmap_peaks, to_heatmap_pixels, to_input_pixels
from .artifact_output import KeepsBestWeights, WritesSourceArtifact, source_input_spec
from .base import Optim
from .gathered_evaluation import GatheredEvaluation
from .task import TaskModule

# SimpleBaseline's source training: Adam lr 1e-3 (its x0.1 steps at epochs 90 and 120 are for 140 epochs)
POSE_OPTIM = Optim(name="adam", lr=1e-3, weight_decay=0.0, backbone_lr_mult=1.0, power=0.0)
PCK_THRESHOLD = 0.5  # x (heatmap size / 10): PCK@0.05 of the heatmap size (RegDA's accuracy)
BOX_PCK_THRESHOLD = 0.2  # x the person box's longer side


class PoseTask(GatheredEvaluation, TaskModule):
    """Evaluation on person crops, shared by source training and adaptation.

    Validation and test log ``<eval_prefix>/pck`` (PCK@0.05: a joint is correct within 0.05 heatmap sizes,
    the pose SFDA benchmarks' measure), ``<eval_prefix>/pck/<joint>`` per joint, ``<eval_prefix>/pck_box``
    (PCK@0.2 of the person box's longer side, for users' own data) where the people have keypoints, and
    the label-free ``label_free/peak`` (mean heatmap maximum) and, for a method with an EMA teacher,
    ``label_free/teacher_agreement`` (the fraction of joints whose peaks the EMA pair put within the
    PCK@0.05 distance of each other). ``predict`` writes COCO keypoint results
    in original image pixels and overlays.
    """

    eval_prefix = "target"
    default_optim = POSE_OPTIM
    network: torch.nn.Module

    def build_metrics(self, joint_names: list[str]) -> None:
        self.joint_names, self.num_joints = list(joint_names), len(joint_names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> heatmaps (B, K, h, w)``."""
        return self.network(images)

    def eval_network(self) -> torch.nn.Module:
        """The network that is evaluated and predicts (pose SFDA: the intermediate network)."""
        return self.network

    def agreement_network(self) -> torch.nn.Module | None:
        """The network paired with the evaluated one by an EMA (its student, or the network it is the
        teacher of), for the label-free ``teacher_agreement``; None where the method has no EMA teacher."""
        return None

    @torch.no_grad()
    def heatmaps_of(self, images: torch.Tensor, network: torch.nn.Module | None = None) -> torch.Tensor:
        """``network``'s (default: the evaluated one) heatmaps in eval mode, float."""
        network = network or self.eval_network()
        was_training = network.training
        network.eval()
        with self.trainer.precision_plugin.forward_context():
            maps = network(images)
        network.train(was_training)
        return maps.float()

    def evaluation_rows(self, batch: dict, network: torch.nn.Module | None = None) -> dict:
        """Per-person rows: heatmap peaks and their values, the reference keypoints in heatmap pixels, the
        joint weights, and the input and heatmap sizes."""
        maps = self.heatmaps_of(batch["image"], network)
        peaks, values = heatmap_peaks(maps)
        size, side = batch["image"].shape[-1], maps.shape[-1]
        sizes = torch.tensor([[size, side]], device=maps.device).expand(len(maps), 2)
        other = self.agreement_network() if network is None else None
        agreement = {}
        if other is not None:  # joints where the EMA pair's peaks agree within the PCK@0.05 distance
            other_peaks, _ = heatmap_peaks(self.heatmaps_of(batch["image"], other))
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

    def score_rows(self, rows: dict, prefix: str) -> dict[str, float]:
        """Scores of gathered rows (the same on every process): ``<prefix>/pck...``, ``label_free/peak``."""
        out = {"label_free/peak": float(rows["confidence"].mean())}
        if "agreement" in rows:
            out["label_free/teacher_agreement"] = float(rows["agreement"].mean())
        labelled = rows["labelled"].bool()
        if not labelled.any():
            return out
        size, side = (float(v) for v in rows["sizes"][0])
        box_side = side / PADDING  # the person box's longer side, in heatmap pixels
        for name, threshold, normaliser in (
            ("pck", PCK_THRESHOLD, side / 10),
            ("pck_box", BOX_PCK_THRESHOLD, box_side),
        ):
            metric = PCK(self.joint_names, threshold, sync_on_compute=False)  # rows are gathered already
            metric.update(
                rows["peaks"][labelled],
                rows["reference"][labelled],
                rows["weight"][labelled],
                torch.full((int(labelled.sum()),), normaliser),
            )
            scores = metric.compute()
            out[f"{prefix}/{name}"] = float(scores.pop("pck"))
            if name == "pck":
                out.update({f"{prefix}/{key}": float(v) for key, v in scores.items()})
        return out

    def configure_callbacks(self) -> list:
        """The task's writers: COCO keypoint results and overlays for ``sfda predict``."""
        return [PoseWriter()]

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        maps = self.heatmaps_of(batch["image"])
        peaks, values = heatmap_peaks(maps)
        return {
            "index": batch["index"],
            "matrix": batch["matrix"],
            "image": batch["image"],
            "scores": values,
            "keypoints": to_input_pixels(peaks, batch["image"].shape[-1], maps.shape[-1]),
        }


class PoseSourceTraining(KeepsBestWeights, WritesSourceArtifact, PoseTask):
    """Train SimpleBaseline with JointsMSE (0.5 x MSE over labelled joints) on labelled source people and
    write the pose artifact from the epoch with the best source-validation PCK@0.05.

    Args:
        backbone: 'resnet18' (CPU default), 'resnet50' or 'resnet101' (official; random init).
        deconv_channels: channels of the three deconvolutions (official: 256).
        artifact, overwrite_artifact: see ``sfda.methods.artifact_output``.
        optim: Adam lr 1e-3 constant (SimpleBaseline's; its steps at epochs 90 and 120 belong to a
            140-epoch schedule).
    """

    eval_prefix = "source_val"
    best_metric = "source_val/pck"

    def __init__(
        self,
        backbone: str = "resnet18",
        deconv_channels: int = 256,
        artifact: str | None = None,
        overwrite_artifact: bool = False,
        optim: Optim | None = None,
    ):
        super().__init__(optim)
        self.backbone_name, self.deconv_channels = backbone, deconv_channels
        self.artifact_path, self.overwrite_artifact = artifact, overwrite_artifact
        self.network = None

    def configure_model(self) -> None:
        if self.network is not None:
            return
        dm = self.trainer.datamodule
        spec = source_input_spec(dm, "size, channels, mean, std")
        self.architecture = pose_architecture(
            len(dm.joint_names), self.backbone_name, self.deconv_channels, spec.channels
        )
        self.network = simple_baseline(**self.architecture["kwargs"])
        self.build_metrics(dm.joint_names)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        maps = self(batch["image"]).float()
        check_heatmap_size(maps, batch["heatmaps"])
        loss = joints_mse(maps, batch["heatmaps"], batch["weight"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_end(self) -> None:
        self.write_best_source_artifact("pose", self.trainer.datamodule.joint_names)


def check_heatmap_size(predicted: torch.Tensor, target: torch.Tensor) -> None:
    """Refuse heatmap targets of another size than the network's output, naming the field."""
    if predicted.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"data.heatmap_size: the network outputs {tuple(predicted.shape[-2:])} heatmaps but the "
            f"targets are {tuple(target.shape[-2:])}; set data.heatmap_size to {predicted.shape[-1]}"
        )
