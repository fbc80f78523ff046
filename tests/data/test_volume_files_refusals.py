"""The bad-input catalogue, annotation files that lie: COCO boxes, COCO keypoints and medical volumes.
Every refusal asserts the exit status (through the CLI) or the error, that the message names the file
and the field and the expected value, and that the user's files are unchanged. Crowd regions are
checked to be neither trained on nor scored. All cases run in-process on tiny real files."""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from kits.bad_input import assert_refused
from kits.volumes import brain_mask, scan, segmentation_recipe

from sfda.data.volume_files import Geometry
from sfda.data.volume_writing import process_locale_kept, write_volume


# --- volumes: DICOM series, NIfTI headers and voxels that lie ----
def small_geometry(root: Path, shape=(16, 12, 8)) -> Geometry:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-8.0, 4.0, 10.0)
    return Geometry(root / "none.nii.gz", "synthetic", shape, affine)


def retag(folder: Path, slices: range, tag: str, value: str) -> None:
    """Write ``value`` into DICOM ``tag`` of slices ``slices`` of ``folder`` (UIDs kept)."""
    for k in slices:
        path = folder / f"slice_{k:04d}.dcm"
        image = sitk.ReadImage(str(path))
        image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(path))
        with process_locale_kept():
            writer.Execute(image)


def mixed_series(root: Path, tag: str, value: str) -> tuple[Path, Path]:
    """A DICOM series whose second half has ``tag`` = ``value``, and its NIfTI mask."""
    geometry = small_geometry(root)
    folder = write_volume(scan(), geometry, root / "series")
    retag(folder, range(4, 8), tag, value)
    return folder, write_volume(brain_mask(), geometry, root / "mask.nii.gz")


@pytest.mark.parametrize(
    "tag, value, needle",
    [
        ("0008|0060", "PT", "differ in Modality (0008,0060): 'OT' in slice_0001.dcm, 'PT' in slice_0004.dcm"),
        ("0018|0086", "2", "in EchoNumbers (0018,0086): absent in slice_0001.dcm, '2' in slice_0004.dcm"),
        ("0020|0011", "77", "differ in SeriesNumber (0020,0011)"),
        ("0008|103e", "T2 FLAIR", "differ in SeriesDescription (0008,103E)"),
    ],
)
def test_a_dicom_series_mixing_acquisitions_under_one_uid_is_refused_naming_the_tag(user, tag, value, needle):
    folder, mask = mixed_series(user, tag, value)
    assert_refused(
        ["fit", "--config", segmentation_recipe(user, folder, mask)],
        user,
        "series: one SeriesInstanceUID holds slices that",
        needle,
        "expected every slice of one volume to share it",
    )


def nifti_with_pixdim(path: Path, data: np.ndarray, index: int, value: float) -> Path:
    """A NIfTI file whose header says ``pixdim[index] = value`` (patched after nibabel writes it)."""
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    raw = bytearray(path.read_bytes())
    offset = 76 + 4 * index  # pixdim: 8 float32 at byte 76 of the NIfTI-1 header
    raw[offset : offset + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("index, value, shown", [(3, 0.0, "0"), (1, -1.0, "-1"), (2, float("nan"), "nan")])
def test_a_nifti_with_a_voxel_size_that_is_not_positive_is_refused_naming_pixdim(user, index, value, shown):
    image = nifti_with_pixdim(user / "scan.nii", scan(), index, value)
    mask = nifti_with_pixdim(user / "mask.nii", brain_mask(), 3, 2.0)
    assert_refused(
        ["fit", "--config", segmentation_recipe(user, image, mask)],
        user,
        f"scan.nii: header field pixdim[{index}] = {shown}",
        "expected positive voxel sizes in mm",
    )
