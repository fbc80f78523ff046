"""``sfda predict`` output for segmentation: masks on the input's grid and PNG overlays.

Masks are NIfTI by default; ``--predict.mask_format same`` writes each in its input's own format
(NRRD, MetaImage or a DICOM series folder, ``data.volume_writing``) and ``dicom-seg`` a DICOM Segmentation
object of a DICOM series input (``dicom_seg``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ...data.volume_files import Geometry
from ...data.volume_writing import output_path, write_volume
from ...run.folder import own_run_dir
from .dicom_seg import check_dicom_inputs, write_dicom_seg

OVERLAY_COLOUR = np.array([255, 40, 40], dtype=np.float32)


def to_original_grid(mask: torch.Tensor, affine: torch.Tensor, original: Geometry) -> np.ndarray:
    """Resample a mask ``(X, Y, Z)`` on the preprocessed grid (``affine``) back onto the voxel grid
    of the original image (nearest neighbour); returns uint8 of the original shape."""
    from monai.data import MetaTensor
    from monai.transforms import ResampleToMatch

    affine_out = torch.as_tensor(original.affine, dtype=torch.float64)
    grid = MetaTensor(torch.zeros(1, *original.shape), affine=affine_out)
    source = MetaTensor(mask[None].float(), affine=affine)
    out = ResampleToMatch(mode="nearest", padding_mode="zeros")(source, img_dst=grid)
    return np.asarray(out[0].round().cpu().numpy(), dtype=np.uint8)


def overlay_png(image: torch.Tensor, masks: dict[str, torch.Tensor], axis: int, path: Path,
                rows: int = 3) -> Path:
    """PNG of ``rows`` slices along ``axis`` (at 25/50/75% of the foreground extent): one panel per
    entry of ``masks`` (e.g. source-only, adapted, reference), mask in red over the grey image.
    ``image (X, Y, Z)`` in [0, 1]; masks ``(X, Y, Z)`` int. Panel names are written in the first row."""
    from PIL import Image, ImageDraw

    union = torch.stack([m > 0 for m in masks.values()]).any(0)
    other = tuple(d for d in range(3) if d != axis)
    present = union.any(dim=other[1]).any(dim=other[0]).nonzero().flatten()
    low, high = (int(present.min()), int(present.max())) if present.numel() else (0, image.shape[axis] - 1)
    positions = [low + (high - low) * (i + 1) // (rows + 1) for i in range(rows)]
    grid = []
    for position in positions:
        grey = image.select(axis, position).float().clamp(0, 1).numpy()
        panels = []
        for mask in masks.values():
            rgb = np.repeat(grey[..., None] * 255, 3, axis=2)
            selected = mask.select(axis, position).numpy() > 0
            rgb[selected] = 0.55 * rgb[selected] + 0.45 * OVERLAY_COLOUR
            panels.append(np.rot90(rgb))  # RAS array: anterior / superior up
        grid.append(np.concatenate(panels, axis=1))
    picture = Image.fromarray(np.concatenate(grid, axis=0).astype(np.uint8))
    draw, width = ImageDraw.Draw(picture), grid[0].shape[1] // len(masks)
    for i, name in enumerate(masks):
        draw.text((i * width + 3, 2), name, fill=(255, 255, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


class MaskWriter(BasePredictionWriter):
    """For each predicted volume: ``masks/<id>.nii.gz`` (on the input image's grid, with its
    geometry; with ``mask_format='same'`` in the input's format: ``<id>.nrrd``, ``.mha``, ``.mhd`` or a
    DICOM series folder ``<id>/``; with ``'dicom-seg'`` a DICOM Segmentation ``<id>.dcm``, refused before
    prediction unless every input is a DICOM series) and ``overlays/<id>.png`` (panels: source-only where
    the method has a source model, then the prediction, then the reference label when the volume has one).
    The segmentation task's writer (``SegmentationTask.configure_callbacks``)."""

    def __init__(self, mask_format: str = "nifti"):
        super().__init__(write_interval="batch")
        self.mask_format = mask_format

    def on_predict_start(self, trainer, pl_module):
        if self.mask_format == "dicom-seg":
            check_dicom_inputs(trainer.datamodule.load_volumes()["eval"])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0):
        run = own_run_dir(trainer)
        if not trainer.is_global_zero or run is None:
            return
        volume = trainer.datamodule.volumes["eval"][prediction["index"]]
        mask = to_original_grid(prediction["mask"], volume.affine, volume.original)
        stem = run / "masks" / volume.name
        if self.mask_format == "dicom-seg":
            write_dicom_seg(mask, volume.original, pl_module.task.names, type(pl_module).__name__,
                            stem.with_name(stem.name + ".dcm"))
        else:
            path = output_path(stem, volume.original, self.mask_format)
            write_volume(mask, volume.original, path, description="sfda predicted mask")
        write_overlay(prediction, volume, pl_module.task.input.slice_axis, run / "overlays")


def write_overlay(prediction: dict, volume, axis: int, folder: Path) -> Path:
    """``folder/<volume id>.png`` of a ``predict_step`` output: source-only (where the method has a source
    model), the prediction and the reference label (when the volume has one)."""
    panels = {"source-only": prediction["source_mask"]} if "source_mask" in prediction else {}
    panels["prediction"] = prediction["mask"]
    if volume.label is not None:
        panels["reference"] = volume.label
    return overlay_png(volume.image[0], panels, axis, folder / f"{volume.name}.png")
