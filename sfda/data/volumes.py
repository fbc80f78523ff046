"""Volumes listed in a MONAI Decathlon-style datalist, preprocessed as the model expects.

A datalist is JSON ``{"training": [{"image": "a.nii.gz", "label": "a_mask.nii.gz"}, ...],
"test": [...]}``; relative paths are relative to the JSON file; ``label`` is optional (an
unlabelled target volume) and an entry may name itself with ``"id"`` (default: the image
file's name without its suffix). ``image`` and ``label`` may each be a NIfTI, NRRD or MetaImage
file or a DICOM series folder (``volume_files``). Image and label must share one voxel grid.
Every volume goes through MONAI dictionary transforms: RAS orientation, resampling to
``VolumeSpec.spacing`` (labels nearest), and the intensity percentiles of each volume mapped to [0, 1].
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .fetch import resolve
from .text_files import text_of
from .volume_files import DatalistError, Geometry, VolumeFile, read_volume, suffix_format


@dataclass(frozen=True)
class VolumeSpec:
    """The preprocessing a segmentation model was trained with (kept in its source artifact).

    Args:
        mode: '2d' (a 2-D network on slices) or '3d' (a 3-D network on patches).
        roi: slice size (H, W) in 2d, patch size (X, Y, Z) in 3d; also the inference window.
        spacing: voxel spacing in mm after reorientation to RAS.
        intensity_percentiles: (low, high) percentiles of each volume mapped to [0, 1], clipped.
        slice_axis: axis of the RAS volume that 2-D slices are cut along (2 = axial).
        channels: image channels (1 for a single MR contrast).
        patch_region: 3d, where training patches are drawn. 'foreground' (default): uniformly within the
            bounding box of the voxels whose scaled intensity is at least ``foreground_threshold`` (the
            head in an MR scan; label-free, like MONAI's CropForeground); 'volume': uniformly over the
            whole volume (artifacts written before this option recorded none and were trained so). Why:
            BatchNorm statistics follow what the patches hold. Over a whole volume the share of air
            depends on each scanner's field of view (10% of the patches of the tight Colin27 volume, 40%
            of the ITK subject's 256 mm one), and statistics re-estimated on the target then no longer
            match the source's (docs: segmentation guide, "3-D: where patches are drawn").
        foreground_threshold: the scaled intensity (in [0, 1]) at and above which a voxel is foreground.
    """

    mode: Literal["2d", "3d"] = "2d"
    roi: tuple[int, ...] = (128, 128)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    intensity_percentiles: tuple[float, float] = (1.0, 99.0)
    slice_axis: int = 2
    channels: int = 1
    patch_region: Literal["foreground", "volume"] = "foreground"
    foreground_threshold: float = 0.05

    def __post_init__(self):
        if self.mode not in ("2d", "3d"):
            raise ValueError(f"spec.mode: expected '2d' or '3d', got '{self.mode}'")
        dims = 2 if self.mode == "2d" else 3
        if len(self.roi) != dims:
            raise ValueError(f"spec.roi: mode '{self.mode}' needs {dims} sizes, got {list(self.roi)}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spec.spacing: expected 3 positive values in mm, got {list(self.spacing)}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"spec.slice_axis: expected 0, 1 or 2, got {self.slice_axis}")
        low, high = self.intensity_percentiles
        if not 0 <= low < high <= 100:
            raise ValueError("spec.intensity_percentiles: expected 0 <= low < high <= 100, got "
                             f"{[low, high]}")
        if self.patch_region not in ("foreground", "volume"):
            raise ValueError(f"spec.patch_region: expected 'foreground' or 'volume', got "
                             f"'{self.patch_region}'")
        if not 0 <= self.foreground_threshold < 1:
            raise ValueError("spec.foreground_threshold: expected a scaled intensity in [0, 1), got "
                             f"{self.foreground_threshold}")
        for name in ("roi", "spacing", "intensity_percentiles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def spatial_dims(self) -> int:
        return 2 if self.mode == "2d" else 3

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> VolumeSpec:
        """The spec of ``to_dict``; a dict without ``patch_region`` (an artifact written before the option)
        was trained on patches drawn over the whole volume."""
        return cls(**{"patch_region": "volume", **data})


@dataclass
class Volume:
    """One preprocessed volume: ``image (1, X, Y, Z)`` float in [0, 1], ``label (X, Y, Z)`` long
    or None, ``affine (4, 4)`` of the preprocessed grid, the files it came from and the geometry of
    the input image (where predicted masks go back to)."""

    name: str
    image: torch.Tensor
    label: torch.Tensor | None
    affine: torch.Tensor
    image_path: Path
    label_path: Path | None
    original: Geometry | None = None


ACCEPTED = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM series folder"
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9 ._-]*")  # an id becomes a file name: no '/', no leading '.'


def default_id(image: Path) -> str:
    """A volume's id when its entry names none: a DICOM folder's name, or the file name without suffix."""
    return image.name if image.is_dir() else image.name.split(".")[0]


def read_datalist(location: str | Path, key: str) -> list[dict]:
    """Entries of ``key`` with absolute ``image`` / ``label`` paths and an ``id``.

    Raises:
        DatalistError: the file is missing or not JSON, the key is absent or empty, an entry
            lacks ``image``, or a listed file does not exist (naming entry and field).
    """
    try:
        path = resolve(location)
    except FileNotFoundError as err:
        raise DatalistError(f"data.datalist: {err}") from err
    try:
        content = json.loads(text_of(Path(path), "data.datalist", "a JSON datalist"))
    except (OSError, json.JSONDecodeError) as err:
        raise DatalistError(f"{path}: not a readable JSON datalist ({err})") from err
    entries = content.get(key) if isinstance(content, dict) else None
    if not entries:
        keys = list(content) if isinstance(content, dict) else []
        raise DatalistError(f"{path}: no entries under '{key}' (keys present: {keys}); set data.train_key / "
                            "data.eval_key")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DatalistError(f"{path}: entry {i} of '{key}' has no 'image' field (expected {{'image': "
                                "..., 'label': ...})")
        row = {}
        for field_name in ("image", "label"):
            if entry.get(field_name) is None:
                continue
            file = Path(entry[field_name]).expanduser()
            file = file if file.is_absolute() else Path(path).parent / file
            if not file.exists():
                raise DatalistError(f"{path}: '{key}'[{i}].{field_name} = {entry[field_name]}: file not "
                                    f"found ({file})")
            if not file.is_dir() and suffix_format(file) is None:
                raise DatalistError(
                    f"{path}: '{key}'[{i}].{field_name} = {entry[field_name]}: expected {ACCEPTED}"
                )
            row[field_name] = file
        row["id"] = str(entry.get("id") or default_id(row["image"]))
        if not SAFE_ID.fullmatch(row["id"]):
            raise DatalistError(f"{path}: '{key}'[{i}].id = {row['id']!r}: expected letters, digits, '.', "
                                "'_', '-' or spaces, not starting with '.' (the id names the written mask "
                                "file)")
        out.append(row)
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        raise DatalistError(f"{path}: duplicate volume ids in '{key}': "
                            f"{sorted({i for i in ids if ids.count(i) > 1})}")
    return out


GRID_TOLERANCE_MM = 1e-3  # DICOM stores positions as decimal strings


def check_pair(image: Geometry, label: Geometry) -> None:
    """Image and label must share one voxel grid: shape, spacing, orientation and origin (headers)."""
    if image.shape != label.shape or not np.allclose(image.affine, label.affine, atol=GRID_TOLERANCE_MM):
        raise DatalistError(f"{label.path}: the label's voxel grid differs from its image {image.path} "
                            f"(label: {label.describe()}; image: {image.describe()}); "
                            "expected the same grid, "
                            "resample the label onto the image")


def check_finite(image: VolumeFile) -> None:
    """Refuse an image with NaN or infinite voxels, before anything scales or clips them away."""
    bad = ~np.isfinite(image.array)
    if bad.any():
        raise DatalistError(
            f"{image.geometry.path}: the image has {int(bad.sum())} NaN or infinite voxels (of {bad.size}); "
            "expected finite intensities. Replace them (e.g. by 0) in the file"
        )


def check_contrast(image: VolumeFile) -> None:
    """Refuse an image with a channel whose voxels all hold one value (all zero, say): intensity scaling
    divides by its range, and a model sees nothing in it."""
    check_finite(image)
    channels = image.array.reshape(image.array.shape[0], -1)
    for channel, values in enumerate(channels):
        if values.size and values.min() == values.max():
            where = f" channel {channel}:" if len(channels) > 1 else ""
            raise DatalistError(
                f"{image.geometry.path}:{where} every voxel is {values[0]:g} (a constant image); expected an "
                "image with varying intensities (check the file is not a blank or failed export)"
            )


def preprocessing(spec: VolumeSpec, with_label: bool):
    """MONAI dictionary transforms from read volumes (MetaTensors) to the spec's grid (``scaling`` then maps
    the intensities)."""
    from monai.transforms import Compose, Orientationd, Spacingd

    keys = ["image", "label"] if with_label else ["image"]
    return Compose([
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=spec.spacing, mode=["bilinear", "nearest"][: len(keys)]),
    ])


def scaling(spec: VolumeSpec, image, path: Path):
    """The resampled ``image`` with its ``spec.intensity_percentiles`` mapped to [0, 1], clipped (MONAI's
    ScaleIntensityRangePercentiles over all channels). A scaling range that is empty (both percentiles one
    value: a nearly constant image, say all zero but a few voxels) is refused naming the file: MONAI would
    warn and leave the intensities unscaled."""
    from monai.transforms import ScaleIntensityRangePercentiles

    low, high = spec.intensity_percentiles
    bounds = np.percentile(image.as_tensor().numpy(), [low, high])
    if bounds[0] == bounds[1]:
        raise DatalistError(
            f"{path}: the intensity scaling range is empty: percentiles {low:g} and {high:g} of the voxels "
            f"(spec.intensity_percentiles) are both {bounds[0]:g} (a nearly constant image); expected an "
            "image with varying "
            "intensities (check the file is not a blank or failed export, or widen "
            "spec.intensity_percentiles)"
        )
    return ScaleIntensityRangePercentiles(lower=low, upper=high, b_min=0.0, b_max=1.0, clip=True)(image)


def load_volume(entry: dict, spec: VolumeSpec, num_classes: int, use_label: bool = True) -> Volume:
    """Read and preprocess one datalist entry; label values must be integers in ``[0, num_classes)``
    and the label must contain foreground."""
    from monai.data import MetaTensor

    label_path = entry.get("label") if use_label else None
    files = {"image": read_volume(entry["image"])}
    check_contrast(files["image"])
    if label_path is not None:
        files["label"] = read_volume(label_path)
        check_pair(files["image"].geometry, files["label"].geometry)
    tensors = {key: MetaTensor(torch.from_numpy(f.array), affine=torch.from_numpy(f.geometry.affine))
               for key, f in files.items()}
    try:
        data = preprocessing(spec, label_path is not None)(tensors)
    except Exception as err:  # MONAI wraps transform errors in RuntimeError
        raise DatalistError(f"{entry['image']}: cannot preprocess ({type(err).__name__}: {err})") from err
    image = scaling(spec, data["image"], Path(entry["image"]))
    if image.shape[0] != spec.channels:
        raise DatalistError(f"{entry['image']}: {image.shape[0]} channels, the model expects spec.channels = "
                            f"{spec.channels}")
    label = None
    if label_path is not None:
        raw = data["label"][0].as_tensor()
        values = torch.unique(raw)
        bad = values[(values != values.round()) | (values < 0) | (values >= num_classes)]
        if bad.numel():
            shown = [int(v) if float(v).is_integer() else float(v) for v in bad.tolist()[:10]]
            raise DatalistError(f"{label_path}: label values {shown} outside the expected integers "
                                f"0..{num_classes - 1} (data.class_names has {num_classes} classes)")
        label = raw.round().long()
        if not (label > 0).any():
            raise DatalistError(f"{label_path}: empty foreground (no voxel > 0); Dice and HD95 are undefined "
                                "for it")
    return Volume(entry["id"], image.as_tensor().float().contiguous(), label,
                  torch.as_tensor(image.affine, dtype=torch.float64), Path(entry["image"]), label_path,
                  files["image"].geometry)
