"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import numpy as np
import pytest
from kits.volumes import datalist, write_volume

from sfda.data import DatalistError, SegmentationDataModule, VolumeSpec

# data -----------------------------------------------------------------------------------------


def load(tmp_path, image, label, spec=None):
    dm = SegmentationDataModule(datalist(tmp_path, image, label), ["background", "brain"], role="source",
                                input=spec or VolumeSpec(roi=(16, 16), spacing=(1.0, 1.0, 1.0)))
    return dm.load_volumes()


@pytest.fixture
def volume_pair(tmp_path):
    image = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    label = np.zeros((16, 16, 8), dtype=np.uint8)
    label[4:12, 4:12, 2:6] = 1
    return image, label


def test_datalist_errors_name_file_and_field(tmp_path, volume_pair):
    image, label = volume_pair
    img = write_volume(tmp_path / "img.nii.gz", image)
    with pytest.raises(DatalistError, match=r"'training'\[0\].label = nope.nii.gz: file not found"):
        load(tmp_path, img, "nope.nii.gz")
    with pytest.raises(DatalistError, match=r"data.datalist: .*missing.json: no such file"):
        SegmentationDataModule(str(tmp_path / "missing.json"), ["background", "brain"],
                               input=VolumeSpec()).load_volumes()
    dm = SegmentationDataModule(datalist(tmp_path, img, img), ["background", "brain"], eval_key="test",
                                input=VolumeSpec())
    with pytest.raises(DatalistError, match=r"no entries under 'test' \(keys present: \['training'\]\)"):
        dm.load_volumes()


def test_mismatched_shape_affine_label_values_and_empty_foreground_are_refused(tmp_path, volume_pair):
    image, label = volume_pair
    img = write_volume(tmp_path / "img.nii.gz", image)
    with pytest.raises(DatalistError, match=r"small.nii.gz: the label's voxel grid differs .*"
                                            r"label: grid 8x16x8.*"
                                            r"image: grid 16x16x8"):
        load(tmp_path, img, write_volume(tmp_path / "small.nii.gz", label[:8]))
    shifted = np.eye(4)
    shifted[0, 3] = 5
    with pytest.raises(DatalistError, match=r"shifted.nii.gz: the label's voxel grid differs .*"
                                            r"origin \[5.0, 0.0, 0.0\]"):
        load(tmp_path, img, write_volume(tmp_path / "shifted.nii.gz", label, shifted))
    with pytest.raises(DatalistError, match=r"label values \[3\] outside the expected integers 0..1"):
        load(tmp_path, img, write_volume(tmp_path / "three.nii.gz", label * 3))
    with pytest.raises(DatalistError, match="empty foreground"):
        load(tmp_path, img, write_volume(tmp_path / "empty.nii.gz", label * 0))
