"""Hospital formats: NRRD, MetaImage and DICOM series read into the NIfTI convention, masks written back in
them on the input's grid, per-volume CSV, and the bad input of each format. The real-geometry cases
convert the Colin27 head (and the ITK subject, LSA-oriented) inside the test with SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from kits.volumes import small_volume

from sfda.data.volume_files import Geometry, read_volume
from sfda.data.volume_writing import output_path, write_volume


def small_geometry(tmp_path, spacing=(1.0, 1.0, 2.0), shape=(16, 12, 8)) -> Geometry:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-8.0, 4.0, 10.0)
    return Geometry(tmp_path / "none.nii.gz", "synthetic", shape, affine)


@pytest.mark.parametrize("input_name", ["in.nrrd", "in.mha", "in_series", "in.nii.gz"])
def test_masks_are_written_in_the_inputs_format_and_geometry(tmp_path, input_name):
    import locale

    encoding = locale.getpreferredencoding(False)
    geometry = small_geometry(tmp_path)
    source = read_volume(write_volume(small_volume(geometry), geometry, tmp_path / input_name))
    mask = (small_volume(geometry) * 1).astype(np.uint8)
    for mask_format in ("same", "nifti"):
        path = output_path(tmp_path / "masks" / mask_format / "case", source.geometry, mask_format)
        written = read_volume(write_volume(mask, source.geometry, path))
        expected = "nifti" if mask_format == "nifti" else source.geometry.format
        assert written.geometry.format == expected and written.geometry.shape == source.geometry.shape
        assert np.allclose(written.geometry.affine, source.geometry.affine, atol=1e-6)
        assert np.array_equal(written.array[0], mask)
        with pytest.raises(FileExistsError, match="never replaces"):
            write_volume(mask, source.geometry, path)
    assert locale.getpreferredencoding(False) == encoding  # GDCM's writer leaves the process locale as it was
    if source.geometry.format == "dicom":  # the mask series joins the input's study, as a new series
        tags = [sitk.ImageFileReader() for _ in range(2)]
        for reader, file in zip(
            tags,
            (source.geometry.slice_files[0], sorted((tmp_path / "masks" / "same" / "case").iterdir())[0]),
            strict=True,
        ):
            reader.SetFileName(str(file))
            reader.ReadImageInformation()
        assert tags[0].GetMetaData("0020|000d") == tags[1].GetMetaData("0020|000d")
        assert tags[0].GetMetaData("0020|000e") != tags[1].GetMetaData("0020|000e")


def test_a_written_dicom_series_carries_pixel_spacing_for_readers_other_than_gdcm(tmp_path):
    """GDCM alone puts a secondary capture's in-plane spacing in Nominal Scanned Pixel Spacing; Pixel
    Spacing (row spacing = along y, column spacing = along x) is what PACS viewers and pydicom read."""
    import pydicom

    geometry = small_geometry(tmp_path, spacing=(0.7, 0.8, 2.0))
    series = write_volume(small_volume(geometry).astype(np.uint8), geometry, tmp_path / "series")
    for file in series.iterdir():
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.7], file
        assert float(ds.SliceThickness) == 2.0
    assert np.allclose(read_volume(series).geometry.affine, geometry.affine, atol=1e-6)
