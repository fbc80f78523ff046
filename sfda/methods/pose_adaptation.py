"""Pose adaptation: the base (pose artifact, checks, source-only PCK, before/after overlays), the source
model as is, AdaBN, and the Mean Teacher heatmap baseline. Pose SFDA is in ``pose_sfda``."""

from __future__ import annotations

from pathlib import Path

import torch

from ..losses.pose import joints_mse
from ..models import ArtifactError, SourceModel, load_source
from ..pose_writer import write_overlays
from ..pseudo_labels import EMATeacher
from ..pseudo_labels.heatmaps import (
    confident_joints,
    heatmap_peaks,
    move_points,
    render_heatmaps,
    to_input_pixels,
    view_to_view,
)
from ..report.evidence import OVERLAYS
from .adabn import RefitsNormStatistics
from .base import Optim, SourceAdaptation
from .gathered_evaluation import ScoresSourceNetwork
from .pose import PoseTask, check_heatmap_size
from .source_only import ScoresTheSourceModel

# the pose SFDA spec's target-network optimiser (Adam 1e-4), for the adaptation baselines too
ADAPTATION_OPTIM = Optim(name="adam", lr=1e-4, weight_decay=0.0, backbone_lr_mult=1.0, power=0.0)


class PoseAdaptation(ScoresSourceNetwork, SourceAdaptation, PoseTask):
    """Base of pose adaptation: loads a pose artifact, checks its joints against the target data (count
    and names, in order) and adopts its input spec, and measures source-only PCK before the first step.

    Args:
        source: path of a pose artifact (``PoseSourceTraining`` writes one), ``{path, architecture}`` for
            one of a network class from outside sfda that you trust, or an ``ExternalModel`` with
            ``task: pose``.
        optim: optimiser and schedule (default Adam 1e-4, constant).
        evaluate_source: measure ``source_only/pck`` (and the rest) at fit start.
    """

    source_only_key = "source_only/pck"
    default_optim = ADAPTATION_OPTIM

    def __init__(self, source: SourceModel, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(optim)
        self.artifact = load_source(source)
        if self.artifact.task != "pose":
            raise ArtifactError(
                f"model.source: {self.artifact.origin or source} is a '{self.artifact.task}' "
                "artifact; a pose method needs one written by PoseSourceTraining (or an "
                "ExternalModel with task: pose)"
            )
        self.network = self.artifact.build_network()
        self.evaluate_source = evaluate_source
        self.build_metrics(self.artifact.class_names)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "check_model_joints"):  # before the generic checks
            datamodule.check_model_joints(self.num_joints)
            if datamodule.joint_names != self.joint_names:
                raise ArtifactError(
                    f"data: joints {datamodule.joint_names} are not the source model's "
                    f"{self.joint_names} (in this order); heatmaps would be matched to the "
                    "wrong joints"
                )
        super().setup(stage)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """This model's keypoints and, for the before/after overlays, the source model's."""
        out = super().predict_step(batch, batch_idx)
        maps = self.heatmaps_of(batch["image"], self.source_network())
        peaks, values = heatmap_peaks(maps)
        out["source_keypoints"] = to_input_pixels(peaks, batch["image"].shape[-1], maps.shape[-1])
        out["source_scores"] = values
        return out

    def report_evidence(self, folder: Path | None) -> None:
        """``overlays/*.png`` of the first ``OVERLAYS`` evaluation people for ``sfda report``: source-only,
        adapted and the reference keypoints, drawn as ``sfda predict`` draws them (rank 0 only)."""
        if folder is None:
            return
        batch = self.first_evaluation_items(OVERLAYS)
        write_overlays(
            self.predict_step(batch, 0),
            self.trainer.datamodule,
            folder / "overlays",
            {"keypoints": batch["keypoints"], "weight": batch["weight"]},
            split="val",
        )


class PoseSourceOnly(ScoresTheSourceModel, PoseAdaptation):
    """The source pose model as is: ``sfda test`` / ``sfda predict`` only (no training step)."""


class PoseAdaBN(RefitsNormStatistics, PoseAdaptation):
    """AdaBN for pose: re-estimate every BatchNorm's statistics on the target people (one pass, no
    gradient); weights unchanged. Run with ``trainer.max_epochs: 1``."""

    def __init__(self, source: SourceModel, evaluate_source: bool = True):
        super().__init__(source, evaluate_source=evaluate_source)
        self.setup_norm_refit()


class MeanTeacherPose(PoseAdaptation):
    """Mean Teacher for heatmap pose (the baseline of the source-free pose papers).

    Per step: the EMA teacher (eval mode) predicts heatmaps on the plain crop; each joint whose peak is
    at least ``confidence`` becomes a pseudo-label, moved into the strong view's pixels through the exact
    view-to-view affine (left and right swapped when the strong view is mirrored) and rendered as a
    Gaussian heatmap; the student learns them with JointsMSE on the strong view. The teacher follows
    the student after every step and is the network evaluated.

    Args:
        confidence: teacher peak value from which a joint is a pseudo-label (heatmaps peak near 1 when sure).
        momentum: EMA decay of the teacher per step.
    """

    needs_strong_view = True

    def __init__(
        self,
        source: SourceModel,
        optim: Optim | None = None,
        evaluate_source: bool = True,
        confidence: float = 0.5,
        momentum: float = 0.999,
    ):
        super().__init__(source, optim, evaluate_source)
        if not 0 <= confidence <= 1:
            raise ValueError(f"model.confidence: expected a heatmap peak value in [0, 1], got {confidence}")
        self.confidence = confidence
        self.teacher = EMATeacher(self.network, momentum)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:  # the joint order of a mirrored view
            self.flip_order = torch.as_tensor(datamodule.skeleton.flip_order())

    def eval_network(self) -> torch.nn.Module:
        return self.teacher.model

    def agreement_network(self) -> torch.nn.Module:
        return self.network  # the student the evaluated teacher follows

    def pseudo_heatmaps(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's confident joints as strong-view heatmaps ``(B, K, h, w)`` and weights ``(B, K)``."""
        maps = self.heatmaps_of(batch["image"], self.teacher.model)
        peaks, weight = confident_joints(maps, self.confidence)
        size, side = batch["image"].shape[-1], maps.shape[-1]
        moved = move_points(
            to_input_pixels(peaks, size, side), view_to_view(batch["strong_matrix"], batch["matrix"])
        )
        mirrored = torch.linalg.det(batch["strong_matrix"][:, :, :2].double()) < 0
        order = self.flip_order.to(moved.device)
        moved = torch.where(mirrored[:, None, None], moved[:, order], moved)
        weight = torch.where(mirrored[:, None], weight[:, order], weight)
        inside = ((moved >= 0) & (moved <= size - 1)).all(dim=-1).float()
        return render_heatmaps(moved, weight * inside, size, side), weight * inside

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        targets, weight = self.pseudo_heatmaps(batch)
        maps = self(batch["strong"]).float()
        check_heatmap_size(maps, targets)
        loss = joints_mse(maps, targets, weight)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/pseudo_joints", weight.mean())
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.teacher.update(self.network)
