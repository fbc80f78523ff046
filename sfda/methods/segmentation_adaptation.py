"""Segmentation adaptation: the base (source artifact, checks, source-only Dice) and the
normalisation baselines AdaBN and Tent; ``SegmentationSourceOnly`` evaluates the source model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..losses import weighted_entropy
from ..mask_writer import write_overlay
from ..models import ArtifactError, SourceModel, load_source
from ..models.norm import batch_norm_layers, use_batch_statistics
from ..report.evidence import OVERLAYS
from .adabn import RefitsNormStatistics
from .base import Optim, SourceAdaptation
from .segmentation import SegmentationTask
from .source_only import ScoresTheSourceModel


class SegmentationAdaptation(SourceAdaptation, SegmentationTask):
    """Base of segmentation adaptation: loads a segmentation source artifact, checks class count
    and preprocessing against the target data (adopting the artifact's when the recipe gives
    none), and measures source-only Dice / HD95 on the evaluation volumes before the first step.

    Args:
        source: path of a segmentation source artifact (``SegmentationSourceTraining`` writes one), or
            ``{path, architecture}`` for an artifact of a network class from outside sfda that you trust.
        optim: optimiser and schedule.
        evaluate_source: measure source-only scores at fit start (``source_only/dice``, ``source_only/hd95``).
    """

    source_only_key = "source_only/dice"
    source_marginal_key = "source_only/marginal_entropy"  # the pixel class marginal (CollapseGuard)

    def __init__(self, source: SourceModel, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(optim)
        self.artifact = load_source(source)
        if self.artifact.task != "segmentation":
            raise ArtifactError(f"model.source: {source} is a '{self.artifact.task}' artifact; a "
                                "segmentation method needs one written by SegmentationSourceTraining")
        self.network = self.artifact.build_network()
        self.evaluate_source = evaluate_source
        self.build_metrics(self.artifact.class_names, self.artifact.input)

    def evaluate_source_model(self) -> dict[str, float]:
        return self.evaluate_volumes("source_only")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """The adapted mask and, for the before/after overlays, the source model's mask."""
        out = super().predict_step(batch, batch_idx)
        if not hasattr(self, "source_network"):
            self.source_network = self.artifact.build_network().to(self.device)
        source_probs = self.predict_volume(batch["image"], self.source_network)[0]
        out["source_mask"] = source_probs.argmax(0).to(torch.uint8).cpu()
        return out


    def report_evidence(self, folder: Path | None) -> None:
        """``overlays/<volume>.png`` of the first ``OVERLAYS`` evaluation volumes for ``sfda report``:
        source-only, adapted and reference, drawn as ``sfda predict`` draws them (rank 0 only)."""
        if folder is None:
            return
        volumes = self.trainer.datamodule.volumes["eval"]
        for batch_idx, batch in zip(range(OVERLAYS), self.trainer.datamodule.val_dataloader(), strict=False):
            prediction = self.predict_step(self.transfer_batch_to_device(batch, self.device, 0), batch_idx)
            write_overlay(prediction, volumes[prediction["index"]], self.spec.slice_axis, folder / "overlays")


class SegmentationSourceOnly(ScoresTheSourceModel, SegmentationAdaptation):
    """The source model as is: ``sfda test`` / ``sfda predict`` only (no training step)."""


class AdaBN(RefitsNormStatistics, SegmentationAdaptation):
    """AdaBN (Li et al. 2017) for segmentation: re-estimate every BatchNorm's running mean and variance on
    the target training samples (a cumulative average over one pass, no gradient); weights unchanged.
    Run with ``trainer.max_epochs: 1``."""

    def __init__(self, source: SourceModel, evaluate_source: bool = True):
        super().__init__(source, evaluate_source=evaluate_source)
        self.setup_norm_refit()


class SegmentationTent(SegmentationAdaptation):
    """Tent for segmentation: mean voxel entropy, BatchNorm affine parameters only, batch
    statistics (as the classification ``Tent``). Evaluation also normalises with batch
    statistics, i.e. those of each inference batch of 32 consecutive slices, which differ
    strongly along a head (empty top and bottom slices): measured to hurt on the demo volumes.

    Args:
        optim: Adam lr 1e-3 constant (Tent's default); the recipe states any change.
    """

    def __init__(self, source: SourceModel, optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(source, optim or Optim(name="adam", lr=1e-3, weight_decay=0.0, power=0.0),
                         evaluate_source)
        self.network.requires_grad_(False)
        self.norm_layers = batch_norm_layers(self.network)
        for bn in self.norm_layers:
            bn.requires_grad_(True)

    def on_train_start(self) -> None:
        super().on_train_start()
        use_batch_statistics(self.norm_layers)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        use_batch_statistics(self.norm_layers)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        probs = self(batch["image"]).float().softmax(dim=1)
        loss = weighted_entropy(probs, torch.ones(self.num_classes))
        self.log("train/entropy", loss, prog_bar=True)
        return loss
