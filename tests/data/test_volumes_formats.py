"""Hospital formats: NRRD, MetaImage and DICOM series read into the NIfTI convention, masks written back in
them on the input's grid, per-volume CSV, and the bad input of each format. The real-geometry cases
convert the Colin27 head (and the ITK subject, LSA-oriented) inside the test with SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
from kits.volumes import small_volume, write_datalist

from sfda.data import DatalistError, SegmentationDataModule, VolumeSpec
from sfda.data.volume_files import Geometry
from sfda.data.volume_writing import write_volume


def small_geometry(tmp_path, spacing=(1.0, 1.0, 2.0), shape=(16, 12, 8)) -> Geometry:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-8.0, 4.0, 10.0)
    return Geometry(tmp_path / "none.nii.gz", "synthetic", shape, affine)


def test_an_nrrd_label_on_another_grid_than_its_image_is_refused_naming_the_label(tmp_path):
    image_geometry, label_geometry = (
        small_geometry(tmp_path),
        small_geometry(tmp_path, spacing=(1.0, 1.0, 3.0)),
    )
    image = write_volume(small_volume(image_geometry), image_geometry, tmp_path / "image.nrrd")
    label = write_volume(small_volume(label_geometry), label_geometry, tmp_path / "label.nrrd")
    dm = SegmentationDataModule(
        write_datalist(tmp_path, image, label),
        ["background", "brain"],
        role="source",
        input=VolumeSpec(roi=(16, 16), spacing=(1.0, 1.0, 1.0)),
    )
    with pytest.raises(
        DatalistError,
        match=r"label.nrrd: the label's voxel grid differs from its image .*image.nrrd "
        r"\(label: grid 16x12x8, spacing \[1.0, 1.0, 3.0\] mm",
    ):
        dm.load_volumes()
