"""Segmentation: the task (whole-volume evaluation, masks, overlays) and its source training.

The network maps ``(B, channels, *roi)`` patches or slices to logits ``(B, C, *roi)`` (a MONAI UNet, 2-D or
3-D, or a user's own). Evaluation and prediction run on whole volumes: slice by slice for a 2-D network,
sliding windows for a 3-D one.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..data.volumes import VolumeSpec
from ..losses import weighted_entropy
from ..metrics import volume_scores
from ..metrics.segmentation import class_volumes_ml, write_per_volume_csv
from ..metrics.validators import marginal_entropy
from ..models import ArtifactError, SourceArtifact
from ..models.artifact import import_target
from ..models.segmentation import unet_architecture
from ..pseudo_labels import class_fractions, entropy, mean_size_where_present
from ..pseudo_labels.passes import Rows
from ..run.folder import own_run_dir
from .base import Task, evaluating
from .evidence import OVERLAYS
from .module import TaskModule
from .optim import Optim
from .source_training import SourceTrainingModule, source_input_spec
from .writers import MaskWriter
from .writers.masks import write_overlay

SEGMENTATION_OPTIM = Optim(name="adam", lr=5e-4, weight_decay=1e-4, backbone_lr_mult=1.0, step_epochs=20,
                           step_factor=0.9)
VOLUME_FIELDS = ("dice", "hd95", "predicted_ml", "reference_ml")  # per foreground class, per volume


def central_window(images: torch.Tensor, roi: tuple[int, ...]) -> torch.Tensor:
    """``images (B, C, *spatial)`` cropped, or zero-padded, about the centre to ``(B, C, *roi)``."""
    for axis, size in enumerate(roi, start=2):
        have = images.shape[axis]
        if have > size:
            images = images.narrow(axis, (have - size) // 2, size)
        elif have < size:
            shape = list(images.shape)
            shape[axis] = size
            padded = images.new_zeros(shape)
            padded.narrow(axis, (size - have) // 2, have).copy_(images)
            images = padded
    return images


class SegmentationTask(Task):
    """Validation and test run whole-volume inference on each evaluation volume and log
    ``<prefix>/dice`` (mean over volumes and foreground classes of the per-volume 3-D Dice),
    ``<prefix>/dice_std`` (std over volumes), ``<prefix>/hd95`` (mm) where volumes have labels, and the
    label-free ``label_free/entropy`` (mean voxel entropy) and ``label_free/marginal_entropy`` (entropy of
    the pixel class marginal: the mean voxel probability over all volumes). Per-volume values go to
    ``results.json`` as ``<prefix>/dice/<volume id>``; ``sfda test`` writes ``per_volume.csv``.
    ``predict`` writes the predicted mask of each volume (NIfTI, or the input's format) and overlays."""

    name = "segmentation"
    headline = "dice"
    class_marginal = True
    per_item_scores = True
    default_optim = SEGMENTATION_OPTIM
    input: VolumeSpec

    def check_data(self, datamodule, artifact: SourceArtifact) -> None:
        """As every task, and the label names must be the model's, in its order: label value ``i`` is what
        output channel ``i`` predicts (a bundle's ``channel_def``, an artifact's ``class_names``)."""
        super().check_data(datamodule, artifact)
        names = list(getattr(datamodule, "class_names", None) or [])
        if names and names != artifact.class_names:
            raise ArtifactError(f"data.class_names {names} differ from the labels of the source model "
                                f"{artifact.origin or ''} {artifact.class_names}; label value i must be what "
                                "output channel i predicts. Use a model of the target's labels, or name the "
                                "labels as the model does")

    def forward(self, module: TaskModule, images: torch.Tensor, index: torch.Tensor | None = None):
        """``(B, channels, *roi) -> logits (B, C, *roi)``."""
        return module.network(images)

    def mean_entropy(self, outputs: torch.Tensor) -> torch.Tensor:
        """Mean voxel entropy of logits ``(B, C, *roi)``."""
        probs = outputs.float().softmax(dim=1)
        return weighted_entropy(probs, torch.ones(self.num_classes))

    def inferer(self):
        """Slice-by-slice (2-D network) or 3-D sliding-window inference over a whole volume."""
        from monai.inferers import SliceInferer, SlidingWindowInferer  # MONAI on first use: 70 MiB a process

        spec = self.input
        if spec.mode == "2d":
            return SliceInferer(roi_size=spec.roi, sw_batch_size=32, spatial_dim=spec.slice_axis,
                                progress=False)
        return SlidingWindowInferer(roi_size=spec.roi, sw_batch_size=2, overlap=0.25, mode="gaussian")

    @torch.no_grad()
    def predict_volume(self, module: TaskModule, image: torch.Tensor,
                       network: torch.nn.Module) -> torch.Tensor:
        """``image (1, channels, X, Y, Z) -> probs (1, C, X, Y, Z)`` with ``network`` in eval mode."""
        precision = module.trainer.precision_plugin
        with module.stopwatch("inference"), evaluating(network), precision.forward_context():
            logits = self.inferer()(image, network)
        module.voxels_inferred = getattr(module, "voxels_inferred", 0) + image[0, 0].numel()
        return logits.float().softmax(dim=1)

    # online test-time adaptation (a stream of slices) ----------------------------------------------------
    def online_count_shape(self) -> tuple[int, int]:
        """Per class ``(C, 3)``: the pixels predicted AND labelled as the class, predicted as it, labelled
        as it (the sufficient statistics of a Dice pooled over a domain's pixels)."""
        return (self.num_classes, 3)

    def online_counts(self, module: TaskModule, outputs, labels: torch.Tensor, rows: torch.Tensor
                      ) -> torch.Tensor:
        """``outputs`` logits or log-probabilities ``(B, C, H, W)``, ``labels (B, H, W)``."""
        predicted = outputs.detach()[rows].argmax(dim=1).flatten()
        truth = labels[rows].to(predicted.device).flatten()
        k = self.num_classes
        both = torch.bincount(truth[predicted == truth], minlength=k)
        return torch.stack([both, torch.bincount(predicted, minlength=k), torch.bincount(truth, minlength=k)],
                           dim=1)

    def online_scores(self, counts: torch.Tensor) -> dict[str, float]:
        """``dice``: the mean over foreground classes of the Dice pooled over the domain's pixels,
        ``2 |P & T| / (|P| + |T|)`` (a class absent from both counts as 1); ``dice_<class>`` each;
        ``samples``: the slices scored (``online_counts`` adds no slice count, so the pixels / slice size)."""
        pixels = float(counts[:, 2].sum())
        if not pixels:
            return {"samples": 0.0}
        per_class = {}
        for c in range(1, self.num_classes):
            both, predicted, truth = (float(v) for v in counts[c])
            per_class[f"dice_{self.names[c]}"] = 2 * both / (predicted + truth) if predicted + truth else 1.0
        dice = sum(per_class.values()) / len(per_class)
        return {"dice": dice, **per_class, "samples": pixels / math.prod(self.input.roi)}

    # evaluation -------------------------------------------------------------------------------------------
    def evaluation_rows(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> Rows:
        """One row per volume (batches hold one): ``entropy (1,)`` (mean voxel entropy), ``class_mass (1, C)``
        (each class's probability summed over the voxels) and per foreground class ``(1, C-1)``:
        ``predicted_ml`` and, NaN without a label, ``dice``, ``hd95`` (mm), ``reference_ml``."""
        probs = self.predict_volume(module, batch["image"], network)
        label, prediction = batch["label"], probs[0].argmax(0)
        spacing = self.input.spacing
        missing = torch.full((self.num_classes - 1,), math.nan)
        values = {"dice": missing, "hd95": missing, "reference_ml": missing,
                  "predicted_ml": class_volumes_ml(prediction, self.num_classes, spacing)}
        if label.dim() == 4:  # (1, X, Y, Z); unlabelled volumes carry -1
            values["dice"], values["hd95"] = volume_scores(prediction, label[0], self.num_classes, spacing)
            values["reference_ml"] = class_volumes_ml(label[0], self.num_classes, spacing)
        voxel_entropy = entropy(probs.movedim(1, -1).reshape(-1, self.num_classes)).mean()
        device = probs.device
        rows = {name: value.float()[None].to(device) for name, value in values.items()}
        rows["entropy"] = voxel_entropy.float()[None]
        rows["class_mass"] = probs[0].flatten(1).sum(dim=1).float()[None]
        return rows

    def score_rows(self, module: TaskModule, rows: Rows, prefix: str, label_free: bool = True
                   ) -> dict[str, float]:
        """The gathered per-volume rows as flat keys (label-free ones always: they are cheap)."""
        out = {"label_free/entropy": float(rows["entropy"].mean())} if len(rows["index"]) else {}
        mass = rows["class_mass"].sum(dim=0) if len(rows["index"]) else None
        if mass is not None and torch.isfinite(mass).all() and mass.sum() > 0:
            out["label_free/marginal_entropy"] = float(marginal_entropy((mass / mass.sum())[None]))
        labelled = ~rows["dice"].isnan().any(dim=1)
        if labelled.any():
            dice, hd95 = rows["dice"][labelled], rows["hd95"][labelled]
            volume_dice = dice.nanmean(dim=1)
            out.update({f"{prefix}/dice": float(volume_dice.mean()), f"{prefix}/hd95": float(hd95.nanmean()),
                        f"{prefix}/dice_std": float(volume_dice.std(unbiased=False))})
            names = module.trainer.datamodule.volumes["eval"] if module._trainer is not None else []
            for row, value in zip(rows["index"][labelled].tolist(), volume_dice.tolist(), strict=True):
                out[f"{prefix}/dice/{names[row].name if names else row}"] = value
        return out

    def after_test(self, module: TaskModule, rows: Rows) -> None:
        """``per_volume.csv`` in the run folder, and this process's sliding-window throughput."""
        run = own_run_dir(module.trainer)
        if run is not None and module.trainer.is_global_zero and len(rows["index"]):
            volumes = module.trainer.datamodule.volumes["eval"]
            table = {"index": rows["index"].cpu(), **{k: rows[k].cpu() for k in VOLUME_FIELDS}}
            write_per_volume_csv(run / "per_volume.csv", table, [v.name for v in volumes], self.names)
        if module.stopwatch.totals.get("inference"):
            module.results["timing/inference_voxels_per_s"] = (module.voxels_inferred
                                                               / module.stopwatch.totals["inference"])

    # predictions ------------------------------------------------------------------------------------------
    def predict(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> dict:
        """The mask and, where the module has a source network, the source model's mask (overlays)."""
        probs = self.predict_volume(module, batch["image"], network)
        out = {"index": int(batch["index"][0]), "mask": probs[0].argmax(0).to(torch.uint8).cpu()}
        source = module.source_network()
        if source is not None:
            source_probs = self.predict_volume(module, batch["image"], source)[0]
            out["source_mask"] = source_probs.argmax(0).to(torch.uint8).cpu()
        return out

    @classmethod
    def writers(cls, module: TaskModule) -> list:
        """Masks (NIfTI, or the input's format: the CLI's ``--predict.mask_format``) and overlays."""
        return [MaskWriter(getattr(module, "mask_format", "nifti"))]

    # deployment -------------------------------------------------------------------------------------------
    def export_inputs(self, batch: dict, slices: int = 4) -> torch.Tensor:
        """Windows the inference would give the network, cut from the batch's volume ``(1, C, X, Y, Z)``:
        2-D, ``slices`` slices around the middle along ``slice_axis`` ``(slices, C, *roi)``; 3-D, the
        central patch ``(1, C, *roi)``. Cropped, or zero-padded, to ``roi`` about the centre."""
        volume = batch["image"]
        if self.input.mode == "2d":
            stack = volume[0].movedim(1 + self.input.slice_axis, 0)  # (slices, C, H, W)
            middle = stack.shape[0] // 2
            volume = stack[max(0, middle - slices // 2):middle + (slices + 1) // 2]
        return central_window(volume, self.input.roi)

    def deployment_spec(self, module: TaskModule) -> dict:
        spec = super().deployment_spec(module)
        window = ("2-D slices along slice_axis, each cut into input.roi windows" if self.input.mode == "2d"
                  else "3-D sliding windows of input.roi, overlap 0.25, gaussian-weighted (MONAI "
                       "SlidingWindowInferer)")
        spec["image"] = (f"float32 (B, channels, *roi): a volume reoriented to RAS, resampled to "
                         f"input.spacing mm, intensities mapped from their intensity_percentiles to [0, 1] "
                         f"(clipped); sfda's inference: {window}")
        spec["outputs"] = {"logits": "(B, K, *roi) per-voxel class scores in class_names order; softmax, "
                                     "then argmax gives the mask"}
        return spec

    def report_evidence(self, module: TaskModule, folder: Path | None) -> None:
        """``overlays/<volume>.png`` of the first ``OVERLAYS`` evaluation volumes for ``sfda report``:
        source-only, adapted and reference, drawn as ``sfda predict`` draws them (rank 0 only)."""
        if folder is None:
            return
        datamodule = module.trainer.datamodule
        volumes = datamodule.volumes["eval"]
        for batch_idx, batch in zip(range(OVERLAYS), datamodule.val_dataloader(), strict=False):
            batch = module.transfer_batch_to_device(batch, module.device, 0)
            prediction = module.predict_step(batch, batch_idx)
            volume = volumes[prediction["index"]]
            write_overlay(prediction, volume, self.input.slice_axis, folder / "overlays")


class SegmentationSourceTraining(SourceTrainingModule):
    """Train a MONAI UNet (2-D or 3-D, from ``data.input.mode``) with Dice + cross-entropy on
    labelled source volumes and write the source artifact (the final weights) at the end.

    Deviation: the paper trains with cross-entropy only; Dice + CE is MONAI's standard for
    foreground-sparse masks. Validation Dice is on ``data.eval_key`` volumes of the SOURCE site.

    Args:
        channels: UNet channels per level (paper's code: 32 base filters).
        strides: UNet down-sampling strides (one fewer than channels).
        num_res_units: residual units per UNet block.
        artifact, overwrite_artifact: see ``SourceTrainingModule``.
        optim: Adam lr 5e-4, wd 1e-4, lr x0.9 every 20 epochs (paper's source training).
    """

    tasks = ("segmentation",)
    task_class = SegmentationTask

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256), strides: tuple[int, ...] = (2, 2, 2),
                 num_res_units: int = 2, artifact: str | None = None, overwrite_artifact: bool = False,
                 optim: Optim | None = None):
        super().__init__(artifact, overwrite_artifact, optim or SEGMENTATION_OPTIM)
        if len(strides) != len(channels) - 1:
            raise ValueError(f"model.strides: expected {len(channels) - 1} strides for channels "
                             f"{list(channels)}, got {list(strides)}")
        self.unet = {"channels": tuple(channels), "strides": tuple(strides), "num_res_units": num_res_units}

    def configure_model(self) -> None:
        if self.network is not None:
            return
        dm = self.trainer.datamodule
        spec = source_input_spec(dm, "a VolumeSpec: mode, roi, spacing, ...")
        self.architecture = unet_architecture(spec.spatial_dims, spec.channels, dm.num_classes, **self.unet)
        self.network = import_target(self.architecture["target"])(**self.architecture["kwargs"])
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.task = SegmentationTask(dm.class_names, dm.input_spec)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits.float(), batch["label"][:, None])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def source_artifact(self, network: torch.nn.Module) -> SourceArtifact:
        self.record_class_sizes()
        return super().source_artifact(network)

    def record_class_sizes(self) -> None:
        """``results["source/size/<class>"]``: mean fraction of each foreground class over the source
        training samples that contain it (from the labels): the anatomical sizes a target site can
        use in ``ConstantSizes`` without any source image."""
        dm = self.trainer.datamodule
        labelled = lambda b: {"f": class_fractions(b["label"], dm.num_classes)}  # noqa: E731
        fractions = self.target_pass(dm.bank_dataloader(), labelled, "source class sizes")["f"]
        for name, size in zip(dm.class_names[1:], mean_size_where_present(fractions).tolist(), strict=True):
            self.results[f"source/size/{name}"] = size
