"""The bad-input catalogue, annotation files that lie: COCO boxes, COCO keypoints and medical volumes.
Every refusal asserts the exit status (through the CLI) or the error, that the message names the file
and the field and the expected value, and that the user's files are unchanged. Crowd regions are
checked to be neither trained on nor scored. All cases run in-process on tiny real files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from kits.bad_input import (
    assert_refused,
)
from kits.volumes import brain_mask, scan, segmentation_recipe

from sfda.data import DatalistError, VolumeSpec
from sfda.data.volume_files import Geometry
from sfda.data.volume_writing import write_volume
from sfda.data.volumes import load_volume, read_datalist


# --- volumes: DICOM series, NIfTI headers and voxels that lie ----
def small_geometry(root: Path, shape=(16, 12, 8)) -> Geometry:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-8.0, 4.0, 10.0)
    return Geometry(root / "none.nii.gz", "synthetic", shape, affine)


@pytest.mark.parametrize(
    "name, voxels, needle",
    [
        ("blank.nii.gz", np.zeros((16, 12, 8), np.int16), "blank.nii.gz: every voxel is 0 (a constant"),
        ("grey.nrrd", np.full((16, 12, 8), 5, np.int16), "grey.nrrd: every voxel is 5 (a constant image)"),
    ],
)
def test_a_constant_image_is_refused_naming_the_file(user, name, voxels, needle):
    geometry = small_geometry(user)
    image = write_volume(voxels, geometry, user / name)
    mask = write_volume(brain_mask(), geometry, user / "mask.nii.gz")
    recipe_file = segmentation_recipe(user, image, mask)
    assert_refused(["fit", "--config", recipe_file], user, needle, "expected an image with varying")


def test_a_blank_channel_of_a_multichannel_image_is_refused_naming_the_channel(user):
    two = np.stack([scan(), np.zeros((16, 12, 8), np.int16)], axis=-1)
    nib.save(nib.Nifti1Image(two, np.diag([1.0, 1.0, 2.0, 1.0])), str(user / "two.nii.gz"))
    with pytest.raises(DatalistError, match=r"two.nii.gz: channel 1: every voxel is 0 \(a constant image\)"):
        load_volume({"id": "two", "image": user / "two.nii.gz"}, VolumeSpec(), 2, use_label=False)


def test_a_mask_of_another_shape_than_its_image_is_refused_naming_both(user):
    geometry = small_geometry(user)
    image = write_volume(scan(), geometry, user / "scan.nii.gz")
    smaller = small_geometry(user, shape=(16, 12, 6))
    mask = write_volume(brain_mask((16, 12, 6)), smaller, user / "mask.nii.gz")
    assert_refused(
        ["fit", "--config", segmentation_recipe(user, image, mask)],
        user,
        "mask.nii.gz: the label's voxel grid differs from its image",
        "grid 16x12x6",
        "expected the same grid",
    )


def test_a_nearly_constant_volume_is_refused_naming_the_empty_scaling_range(user):
    voxels = np.zeros((16, 12, 8), np.float32)
    voxels[0, 0, 0] = 5  # percentiles 1 and 99 are both 0: MONAI would warn and leave it unscaled
    image = write_volume(voxels, small_geometry(user), user / "almost.nii.gz")
    with pytest.raises(DatalistError) as refused:
        load_volume({"id": "almost", "image": image}, VolumeSpec(), 2, use_label=False)
    message = str(refused.value)
    assert "almost.nii.gz: the intensity scaling range is empty: percentiles 1 and 99" in message
    assert "are both 0 (a nearly constant image); expected an image with varying intensities" in message


def test_an_infinite_voxel_is_refused_before_the_scaling_clips_it(user):
    voxels = scan().astype(np.float32)
    voxels[3, 3, 3] = np.inf
    image = write_volume(voxels, small_geometry(user), user / "bright.nii.gz")
    refused = r"bright.nii.gz: the image has 1 NaN or infinite voxels \(of 1536\); expected"
    with pytest.raises(DatalistError, match=refused):
        load_volume({"id": "bright", "image": image}, VolumeSpec(), 2, use_label=False)


# --- 6. datalists, volumes, class splits, labels files, results ----
def nifti(path, data):
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path.name


def test_a_volume_with_nan_voxels_names_the_file(workspace):
    from sfda.data.volumes import DatalistError, VolumeSpec, load_volume

    data = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    data[3, 4, 5] = np.nan
    nifti(workspace / "case.nii.gz", data)
    spec = VolumeSpec(mode="2d", roi=(16, 16), spacing=(1.0, 1.0, 1.0))
    refused = r"case.nii.gz: the image has 1 NaN or infinite voxels \(of 2048\)"
    with pytest.raises(DatalistError, match=refused):
        load_volume({"id": "case", "image": workspace / "case.nii.gz"}, spec, 2)


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "data.datalist"),
        ("{not json", "not a readable JSON datalist"),
        ({"training": [{"label": "x.nii.gz"}]}, "has no 'image' field"),
        ({"training": [{"image": "missing.nii.gz"}]}, "missing.nii.gz: file not found"),
        ({"validation": []}, "no entries under 'training'"),
    ],
)
def test_bad_datalists_are_refused_naming_the_file_and_field(workspace, content, needle):
    from sfda.data.volumes import DatalistError

    path = workspace / "datalist.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DatalistError, match=needle):
        read_datalist(path, "training")


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"image": "case.nii.gz", "id": "../../results/clinical_mask"}, "id = '../../results/clinical_mask'"),
        ({"image": "case.npy"}, "expected .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM series folder"),
    ],
)
def test_datalist_entries_cannot_choose_where_masks_go_or_which_reader_runs(workspace, entry, needle):
    from sfda.data.volumes import DatalistError

    nifti(workspace / "case.nii.gz", np.zeros((4, 4, 4), np.float32))
    np.save(workspace / "case.npy", np.zeros((4, 4, 4), np.float32))
    (workspace / "datalist.json").write_text(json.dumps({"training": [entry]}))
    with pytest.raises(DatalistError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        read_datalist(workspace / "datalist.json", "training")
