"""Write a volume on a given voxel grid as NIfTI, NRRD, MetaImage or a DICOM series folder.

The grid is a ``volume_files.Geometry`` (shape, voxel -> RAS affine), normally the input image's, so
a written mask lies on the scanner's grid with its orientation, spacing and origin. NIfTI keeps the
input's header where the input is NIfTI. DICOM writes one file per slice, in the input's slice
order, with the input series' patient, study and frame-of-reference tags, a new series UID, and
Modality OT ("other"): a derived image series, not a DICOM-SEG object.
"""

from __future__ import annotations

import contextlib
import locale
import uuid
from pathlib import Path

import numpy as np

from .volume_files import Geometry, lps_geometry

MASK_FORMATS = ("nifti", "same")
DICOM_STUDY_TAGS = (
    "0010|0010",
    "0010|0020",
    "0010|0030",
    "0010|0040",
    "0008|0020",
    "0008|0030",
    "0008|0050",
    "0008|0090",
    "0020|000d",
    "0020|0010",
    "0020|0052",
)


def new_uid() -> str:
    """A DICOM UID from a random UUID (the standard's ``2.25.<integer>`` form)."""
    return f"2.25.{uuid.uuid4().int}"


def output_path(stem: Path, geometry: Geometry, mask_format: str) -> Path:
    """``stem`` with the suffix of the format written: ``.nii.gz``, the input's own, or none (DICOM
    folder)."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format: expected one of {list(MASK_FORMATS)}, got '{mask_format}'")
    if mask_format == "nifti" or geometry.format == "nifti":
        return stem.with_name(stem.name + ".nii.gz")
    if geometry.format == "dicom":
        return stem
    suffix = ".nrrd" if geometry.format == "nrrd" else geometry.path.suffix.lower()
    return stem.with_name(stem.name + suffix)


def write_volume(array: np.ndarray, geometry: Geometry, path: Path, description: str = "sfda") -> Path:
    """Write ``array (X, Y, Z)`` on ``geometry`` to ``path`` in the format its suffix (or, without one,
    a DICOM folder) names; never replaces an existing file."""
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(
            f"{path}: array of shape {list(array.shape)} does not fit the grid {list(geometry.shape)}"
        )
    if path.exists():
        raise FileExistsError(f"{path}: exists already; a written volume never replaces a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".nii.gz") or path.suffix == ".nii":
        return write_nifti(array, geometry, path)
    import SimpleITK as sitk

    image = to_sitk(array, geometry.affine)
    if path.suffix:
        sitk.WriteImage(image, str(path), useCompression=True)
        return path
    return write_dicom_series(image, path, geometry.slice_files, description)


def write_nifti(array: np.ndarray, geometry: Geometry, path: Path) -> Path:
    """NIfTI with the input's header (data type set to the array's) where the input is NIfTI."""
    import nibabel as nib

    if geometry.format == "nifti":
        reference = nib.load(str(geometry.path))
        header = reference.header.copy()
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(1, 0)
        image = nib.Nifti1Image(array, reference.affine, header)
    else:
        image = nib.Nifti1Image(array, geometry.affine)
        image.set_qform(geometry.affine, code=1)
        image.set_sform(geometry.affine, code=1)
    nib.save(image, str(path))
    return path


def to_sitk(array: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of ``array (X, Y, Z)`` with the LPS origin, spacing and direction of ``affine``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0))))
    origin, spacing, direction = lps_geometry(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def study_tags(reference_files: tuple[str, ...]) -> dict[str, str]:
    """Patient, study and frame-of-reference tags of the first reference slice (empty without one)."""
    import SimpleITK as sitk

    if not reference_files:
        return {"0020|000d": new_uid(), "0020|0052": new_uid()}
    info = sitk.ImageFileReader()
    info.SetFileName(reference_files[0])
    info.ReadImageInformation()
    return {tag: info.GetMetaData(tag) for tag in DICOM_STUDY_TAGS if info.HasMetaDataKey(tag)}


@contextlib.contextmanager
def process_locale_kept():
    """GDCM's DICOM writer sets the process locale to "C" and leaves it so (Python's text I/O would then
    default to ASCII); restore it afterwards."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def write_dicom_series(
    image, folder: Path, reference_files: tuple[str, ...] = (), description: str = "sfda"
) -> Path:
    """One DICOM file per slice of a 3-D SimpleITK ``image`` in ``folder`` (created), placed by its
    geometry."""
    with process_locale_kept():
        return _write_slices(image, folder, reference_files, description)


def _write_slices(image, folder: Path, reference_files: tuple[str, ...], description: str) -> Path:
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    d = image.GetDirection()
    series = {
        **study_tags(reference_files),
        "0020|000e": new_uid(),
        "0008|0060": "OT",
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|103e": description[:64],
        "0020|0037": "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        # Pixel Spacing (row spacing, column spacing): GDCM writes a secondary capture's in-plane spacing only
        # as Nominal Scanned Pixel Spacing, which readers other than GDCM do not take as the geometry
        "0028|0030": f"{image.GetSpacing()[1]:.10g}\\{image.GetSpacing()[0]:.10g}",
        "0018|0050": f"{image.GetSpacing()[2]:.10g}",
        "0018|0088": f"{image.GetSpacing()[2]:.10g}",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        for tag, value in series.items():
            plane.SetMetaData(tag, value)
        plane.SetMetaData("0008|0018", new_uid())
        plane.SetMetaData("0020|0013", str(k + 1))
        plane.SetMetaData(
            "0020|0032", "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))
        )
        writer.SetFileName(str(folder / f"slice_{k + 1:04d}.dcm"))
        writer.Execute(plane)
    return folder
