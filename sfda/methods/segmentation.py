"""Segmentation LightningModules: whole-volume evaluation shared by all, and source training."""

from __future__ import annotations

import torch

from ..callbacks import own_run_dir
from ..data.volumes import VolumeSpec
from ..mask_writer import MaskWriter
from ..metrics import VolumeScores, volume_scores
from ..metrics.segmentation import class_volumes_ml, write_per_volume_csv
from ..metrics.validators import marginal_entropy
from ..models import SourceArtifact
from ..models.segmentation import unet_architecture
from ..pseudo_labels import class_fractions, entropy, mean_size_where_present
from .artifact_output import WritesSourceArtifact, source_input_spec
from .base import Optim
from .task import TaskModule

SEGMENTATION_OPTIM = Optim(name="adam", lr=5e-4, weight_decay=1e-4, backbone_lr_mult=1.0, step_epochs=20,
                           step_factor=0.9)


class SegmentationTask(TaskModule):
    """Evaluation on whole volumes, shared by source training and adaptation.

    Validation and test run sliding-window inference (slice by slice for a 2-D network) on each
    evaluation volume and log ``<eval_prefix>/dice`` (mean over volumes and foreground classes
    of the per-volume 3-D Dice), ``<eval_prefix>/dice_std`` (std over volumes),
    ``<eval_prefix>/hd95`` (mm) where volumes have labels, and the label-free
    ``label_free/entropy`` (mean voxel entropy) and ``label_free/marginal_entropy`` (entropy of the pixel
    class marginal: the mean voxel probability over all volumes). Per-volume values go to ``results.json`` as
    ``<eval_prefix>/dice/<volume id>``. ``predict`` yields the predicted mask of each volume.
    """

    eval_prefix = "target"
    default_optim = SEGMENTATION_OPTIM
    mask_format = "nifti"  # of `sfda predict`'s masks; the CLI's --predict.mask_format sets it
    network: torch.nn.Module
    spec: VolumeSpec

    def build_metrics(self, class_names: list[str], spec: VolumeSpec) -> None:
        self.class_names, self.num_classes, self.spec = list(class_names), len(class_names), spec
        self.volume_scores = VolumeScores(self.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, channels, *roi) -> logits (B, C, *roi)``."""
        return self.network(images)

    def inferer(self):
        """Slice-by-slice (2-D network) or 3-D sliding-window inference over a whole volume."""
        from monai.inferers import SliceInferer, SlidingWindowInferer

        if self.spec.mode == "2d":
            return SliceInferer(roi_size=self.spec.roi, sw_batch_size=32, spatial_dim=self.spec.slice_axis,
                                progress=False)
        return SlidingWindowInferer(roi_size=self.spec.roi, sw_batch_size=2, overlap=0.25, mode="gaussian")

    @torch.no_grad()
    def predict_volume(self, image: torch.Tensor, network: torch.nn.Module | None = None) -> torch.Tensor:
        """``image (1, channels, X, Y, Z) -> probs (1, C, X, Y, Z)`` with ``network`` (default: ours) in eval
        mode."""
        network = network or self.network
        was_training = network.training
        network.eval()
        with self.trainer.precision_plugin.forward_context():
            logits = self.inferer()(image, network)
        network.train(was_training)
        return logits.float().softmax(dim=1)

    # evaluation ---------------------------------------------------------------------------
    def score_volume(self, batch: dict, scores: VolumeScores, network: torch.nn.Module | None = None) -> None:
        with self.stopwatch("inference"):
            probs = self.predict_volume(batch["image"], network)
        self.voxels_inferred = getattr(self, "voxels_inferred", 0) + batch["image"][0, 0].numel()
        label, prediction = batch["label"], probs[0].argmax(0)
        voxel_entropy = float(entropy(probs.movedim(1, -1).reshape(-1, self.num_classes)).mean())
        predicted_ml = class_volumes_ml(prediction, self.num_classes, self.spec.spacing)
        mass = probs[0].flatten(1).sum(dim=1)  # (C,): for the pixel class marginal
        if label.dim() == 4:  # (1, X, Y, Z); unlabelled volumes carry -1
            dice, hd95 = volume_scores(prediction, label[0], self.num_classes, self.spec.spacing)
            reference_ml = class_volumes_ml(label[0], self.num_classes, self.spec.spacing)
            scores.update(int(batch["index"][0]), voxel_entropy, predicted_ml, dice, hd95, reference_ml,
                          class_mass=mass)
        else:
            scores.update(int(batch["index"][0]), voxel_entropy, predicted_ml, class_mass=mass)

    def gather(self, scores: VolumeScores) -> dict[str, torch.Tensor]:
        """Every process's per-volume rows (``VolumeScores.compute``; every process must call), then reset."""
        table = scores.compute(self.device)
        scores.reset()
        return table

    def summarise(self, table: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        """Reduce the gathered per-volume rows to flat result keys."""
        out = {"label_free/entropy": float(table["entropy"].mean())} if len(table["index"]) else {}
        mass = table["class_mass"].sum(dim=0)
        if len(table["index"]) and torch.isfinite(mass).all() and mass.sum() > 0:
            out["label_free/marginal_entropy"] = float(marginal_entropy((mass / mass.sum())[None]))
        labelled = ~table["dice"].isnan().any(dim=1)
        if labelled.any():
            dice, hd95 = table["dice"][labelled], table["hd95"][labelled]
            volume_dice = dice.nanmean(dim=1)
            out.update({f"{prefix}/dice": float(volume_dice.mean()), f"{prefix}/hd95": float(hd95.nanmean()),
                        f"{prefix}/dice_std": float(volume_dice.std(unbiased=False))})
            names = self.trainer.datamodule.volumes["eval"] if self._trainer is not None else []
            for row, value in zip(table["index"][labelled].tolist(), volume_dice.tolist(), strict=True):
                out[f"{prefix}/dice/{names[row].name if names else row}"] = value
        return out

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.score_volume(batch, self.volume_scores)

    def on_validation_epoch_end(self) -> None:
        self._log_summary()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.score_volume(batch, self.volume_scores)

    def on_test_epoch_end(self) -> None:
        table = self._log_summary()
        run = own_run_dir(self.trainer)
        if run is not None and self.trainer.is_global_zero and len(table["index"]):
            volumes = self.trainer.datamodule.volumes["eval"]
            write_per_volume_csv(run / "per_volume.csv", table, [v.name for v in volumes], self.class_names)
        if self.stopwatch.totals.get("inference"):  # this process's sliding-window throughput
            self.results["timing/inference_voxels_per_s"] = (self.voxels_inferred
                                                             / self.stopwatch.totals["inference"])

    def _log_summary(self) -> dict[str, torch.Tensor]:
        """Log the summary of the gathered volumes (per-volume values go to ``results.json``); returns
        the gathered table."""
        table = self.gather(self.volume_scores)
        summary = self.summarise(table, self.eval_prefix)
        per_volume = {k: v for k, v in summary.items() if k.count("/") > 1}
        self.results.update(per_volume)
        self.log_dict({k: v for k, v in summary.items() if k not in per_volume}, sync_dist=False)
        return table

    def evaluate_volumes(self, prefix: str, network: torch.nn.Module | None = None) -> dict[str, float]:
        """The Dice family of ``network`` on the evaluation volumes (e.g. source-only before adaptation)."""
        scores = VolumeScores(self.num_classes)
        with self.stopwatch("evaluation"):
            for batch in self.trainer.datamodule.val_dataloader():
                self.score_volume({k: v.to(self.device) if torch.is_tensor(v) else v
                                   for k, v in batch.items()}, scores, network)
            summary = self.summarise(self.gather(scores), prefix)
            marginal = summary.get("label_free/marginal_entropy")
            kept = {f"{prefix}/marginal_entropy": marginal} if marginal is not None else {}
            return {**{k: v for k, v in summary.items() if k.startswith(prefix)}, **kept}

    def configure_callbacks(self) -> list:
        """The task's writers: masks (NIfTI, or the input's format) and overlays for ``sfda predict``."""
        return [MaskWriter(self.mask_format)]

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        probs = self.predict_volume(batch["image"])
        return {"index": int(batch["index"][0]), "mask": probs[0].argmax(0).to(torch.uint8).cpu()}



class SegmentationSourceTraining(WritesSourceArtifact, SegmentationTask):
    """Train a MONAI UNet (2-D or 3-D, from ``data.input.mode``) with Dice + cross-entropy on
    labelled source volumes and write the source artifact (the final weights) at the end.

    Deviation: the paper trains with cross-entropy only; Dice + CE is MONAI's standard for
    foreground-sparse masks. Validation Dice is on ``data.eval_key`` volumes of the SOURCE site.

    Args:
        channels: UNet channels per level (paper's code: 32 base filters).
        strides: UNet down-sampling strides (one fewer than channels).
        num_res_units: residual units per UNet block.
        artifact: where to copy the artifact after a complete run (it is always written to
            ``<run dir>/source.pt``); see ``sfda.methods.artifact_output``.
        overwrite_artifact: allow replacing an existing file at ``artifact``.
        optim: Adam lr 5e-4, wd 1e-4, lr x0.9 every 20 epochs (paper's source training).
    """

    eval_prefix = "source_val"

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256), strides: tuple[int, ...] = (2, 2, 2),
                 num_res_units: int = 2, artifact: str | None = None, overwrite_artifact: bool = False,
                 optim: Optim | None = None):
        super().__init__(optim)
        if len(strides) != len(channels) - 1:
            raise ValueError(f"model.strides: expected {len(channels) - 1} strides for channels "
                             f"{list(channels)}, got {list(strides)}")
        self.unet = {"channels": tuple(channels), "strides": tuple(strides), "num_res_units": num_res_units}
        self.artifact_path, self.overwrite_artifact = artifact, overwrite_artifact
        self.network = None

    def configure_model(self) -> None:
        if self.network is not None:
            return
        from monai.losses import DiceCELoss

        dm = self.trainer.datamodule
        spec = source_input_spec(dm, "a VolumeSpec: mode, roi, spacing, ...")
        self.architecture = unet_architecture(spec.spatial_dims, spec.channels, dm.num_classes, **self.unet)
        from ..models.artifact import import_target

        self.network = import_target(self.architecture["target"])(**self.architecture["kwargs"])
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.build_metrics(dm.class_names, dm.input_spec)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits.float(), batch["label"][:, None])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_end(self) -> None:
        self.record_class_sizes()
        dm = self.trainer.datamodule
        state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
        artifact = SourceArtifact(architecture=self.architecture, state_dict=state,
                                  class_names=dm.class_names, input=dm.input_spec, task="segmentation")
        self.write_source_artifact(artifact)

    def record_class_sizes(self) -> None:
        """``results["source/size/<class>"]``: mean fraction of each foreground class over the source
        training samples that contain it (from the labels): the anatomical sizes a target site can
        use in ``ConstantSizes`` without any source image."""
        dm = self.trainer.datamodule
        labelled = lambda b: {"f": class_fractions(b["label"], dm.num_classes)}  # noqa: E731
        fractions = self.target_pass(dm.bank_dataloader(), labelled, "source class sizes")["f"]
        for name, size in zip(dm.class_names[1:], mean_size_where_present(fractions).tolist(), strict=True):
            self.results[f"source/size/{name}"] = size
