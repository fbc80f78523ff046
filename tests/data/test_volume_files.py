"""Hospital formats: NRRD, MetaImage and DICOM series read into the NIfTI convention, masks written back in
them on the input's grid, per-volume CSV, and the bad input of each format. The real-geometry cases
convert the Colin27 head (and the ITK subject, LSA-oriented) inside the test with SimpleITK."""

from __future__ import annotations

import csv
import gzip
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ROOT, SEGMENTATION_RECIPES, results_of, run_sfda
from kits.volumes import small_volume, write_datalist

from sfda.data import DatalistError, SegmentationDataModule, VolumeSpec
from sfda.data.volume_files import Geometry, read_volume
from sfda.data.volume_writing import write_volume

SUBJECTS = ROOT / "data" / "skull_stripping"


@pytest.fixture(scope="module")
def colin27():
    """The real Colin27 image and brain mask as read from NIfTI (fetched like the demo recipes do)."""
    from sfda.data.fetch import resolve

    resolve("demo://skull_stripping/colin27.json")
    return read_volume(SUBJECTS / "colin27" / "image.nii.gz"), read_volume(
        SUBJECTS / "colin27" / "brain.nii.gz"
    )


def copy_as(volume, path, dtype=np.int16):
    """Write a read volume to ``path`` (format from its suffix; no suffix: a DICOM series folder)."""
    return write_volume(volume.array[0].astype(dtype), volume.geometry, path, description="test copy")


def small_geometry(tmp_path, spacing=(1.0, 1.0, 2.0), shape=(16, 12, 8)) -> Geometry:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-8.0, 4.0, 10.0)
    return Geometry(tmp_path / "none.nii.gz", "synthetic", shape, affine)


def small_series(tmp_path):
    """A DICOM series folder of the small test volume: 8 slices, 2 mm apart."""
    geometry = small_geometry(tmp_path)
    return write_volume(small_volume(geometry), geometry, tmp_path / "series")


@pytest.mark.parametrize("name", ["image.nrrd", "image.mha", "image.mhd", "dicom_series"])
def test_copies_of_colin27_read_back_with_the_nifti_voxels_and_geometry(colin27, tmp_path, name):
    image, _ = colin27
    copy = read_volume(copy_as(image, tmp_path / name))
    assert copy.geometry.format == {"nrrd": "nrrd", "mha": "metaimage", "mhd": "metaimage"}.get(
        name.split(".")[-1], "dicom"
    )
    assert np.array_equal(copy.array, image.array)
    assert np.allclose(copy.geometry.affine, image.geometry.affine, atol=1e-6)


def test_dicom_geometry_agrees_with_itks_own_nifti_reader_on_an_oblique_lsa_volume(tmp_path):
    """Independent of sfda's LPS<->RAS conversion: GDCM's reading of the series vs ITK's NIfTI reader."""
    from sfda.data.fetch import resolve

    resolve("demo://skull_stripping/itk.json")
    nifti = SUBJECTS / "itk" / "image.nii.gz"
    folder = copy_as(read_volume(nifti), tmp_path / "itk_series")
    reference, series = (
        sitk.ReadImage(str(nifti)),
        sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))),
    )
    assert series.GetSize() == reference.GetSize()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(series, get)(), getattr(reference, get)(), atol=1e-6), get
    assert np.array_equal(sitk.GetArrayFromImage(series), sitk.GetArrayFromImage(reference))


def test_a_dicom_folder_with_two_series_is_refused_listing_their_uids(tmp_path):
    geometry, both = small_geometry(tmp_path), tmp_path / "both"
    both.mkdir()
    for name in ("a", "b"):
        for file in write_volume(small_volume(geometry), geometry, tmp_path / name).iterdir():
            shutil.move(file, both / f"{name}_{file.name}")
    uids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path / "both")))
    with pytest.raises(
        DatalistError, match=r"both: 2 DICOM series in one folder \(SeriesInstanceUID "
    ) as err:
        read_volume(tmp_path / "both")
    assert all(uid in str(err.value) for uid in uids) and len(uids) == 2


def test_a_dicom_series_with_a_missing_slice_is_refused_naming_the_gap(tmp_path):
    folder = small_series(tmp_path)
    (folder / "slice_0004.dcm").unlink()
    with pytest.raises(
        DatalistError,
        match=r"series: 1 missing slice\(s\) in the DICOM series: 4.000 mm between "
        r"slice_0003.dcm and slice_0005.dcm, expected 2.000 mm",
    ):
        read_volume(folder)


def test_a_dicom_series_with_uneven_slice_spacing_is_refused(tmp_path):
    import pydicom

    folder = small_series(tmp_path)
    # 0.7 mm off its place between neighbours 2 mm apart; only the position changes (edited in place: a
    # re-encode through GDCM may add tags the other slices lack, which another check refuses first)
    moved = pydicom.dcmread(folder / "slice_0004.dcm")
    moved.ImagePositionPatient = [*moved.ImagePositionPatient[:2], moved.ImagePositionPatient[2] + 0.7]
    moved.save_as(folder / "slice_0004.dcm")
    with pytest.raises(
        DatalistError,
        match=r"series: uneven slice spacing in the DICOM series: 2.700 mm between "
        r"slice_0003.dcm and slice_0004.dcm, expected 2.000 mm",
    ):
        read_volume(folder)


def test_a_folder_without_dicom_and_a_single_dicom_file_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DatalistError, match="empty: a folder with no DICOM file in it"):
        read_volume(tmp_path / "empty")
    folder = small_series(tmp_path)
    with pytest.raises(DatalistError, match="slice_0001.dcm: a single DICOM file; name the folder"):
        read_volume(folder / "slice_0001.dcm")


def test_truncated_files_and_a_contradicting_suffix_are_refused_by_name(tmp_path):
    geometry = small_geometry(tmp_path)
    for name in ("cut.nrrd", "cut.nii.gz", "cut.mha"):
        path = write_volume(small_volume(geometry), geometry, tmp_path / name)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DatalistError, match=rf"{name}: (unreadable|not a readable volume)"):
            read_volume(path)
    liar = tmp_path / "liar.nrrd"
    liar.write_bytes(
        gzip.decompress(write_volume(small_volume(geometry), geometry, tmp_path / "real.nii.gz").read_bytes())
    )
    with pytest.raises(DatalistError, match="liar.nrrd: the content is nifti but the suffix says nrrd"):
        read_volume(liar)


def test_an_unknown_suffix_in_a_datalist_names_the_accepted_formats(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"not a volume")
    dm = SegmentationDataModule(
        write_datalist(tmp_path, tmp_path / "scan.png", tmp_path / "scan.png"),
        ["background", "brain"],
        input=VolumeSpec(),
    )
    with pytest.raises(
        DatalistError,
        match=r"'training'\[0\].image = .*scan.png: expected .nii, .nii.gz, .nrrd, "
        r".nhdr, .mha, .mhd or a DICOM series folder",
    ):
        dm.load_volumes()


# end to end through the CLI ---------------------------------------------------------------------
@pytest.mark.slow
def test_dicom_and_nrrd_copies_of_colin27_score_as_the_nifti_through_fit_test_and_predict(
    colin27, colin_source, tmp_path
):
    image, brain = colin27
    lists = {
        "nifti": write_datalist(
            tmp_path,
            SUBJECTS / "colin27" / "image.nii.gz",
            SUBJECTS / "colin27" / "brain.nii.gz",
            "colin27_nifti",
        ),
        "nrrd": write_datalist(
            tmp_path,
            copy_as(image, tmp_path / "image.nrrd"),
            copy_as(brain, tmp_path / "brain.nrrd"),
            "colin27_nrrd",
        ),
        "dicom": write_datalist(
            tmp_path,
            copy_as(image, tmp_path / "image_dicom"),
            copy_as(brain, tmp_path / "brain_dicom"),
            "colin27_dicom",
        ),
    }
    source_only = [
        "--config",
        str(SEGMENTATION_RECIPES / "source_only.yaml"),
        f"--model.init_args.source={colin_source}",
    ]
    dice = {}
    for fmt, datalist in lists.items():
        root = tmp_path / f"test_{fmt}"
        run_sfda(
            "test",
            *source_only,
            f"--data.init_args.datalist={datalist}",
            f"--trainer.default_root_dir={root}",
        )
        results = results_of(root)
        dice[fmt] = results["target/dice"]
        rows = list(csv.DictReader(open(root / "version_0" / "per_volume.csv")))
        assert [r["id"] for r in rows] == [f"colin27_{fmt}"]
        assert float(rows[0]["dice_brain"]) == pytest.approx(dice[fmt], abs=1e-5)
        assert float(rows[0]["reference_ml_brain"]) == pytest.approx(
            float(brain.array.sum()) / 1000, rel=0.05
        )
        assert math.isfinite(float(rows[0]["hd95_mm_brain"]))
    assert 0 < dice["nifti"] <= 1
    assert dice["dicom"] == pytest.approx(dice["nifti"], abs=1e-6) and dice["nrrd"] == pytest.approx(
        dice["nifti"], abs=1e-6
    )

    fit = tmp_path / "fit_dicom"
    run_sfda(
        "fit",
        "--config",
        str(SEGMENTATION_RECIPES / "entropy.yaml"),
        f"--model.init_args.source={colin_source}",
        f"--data.init_args.datalist={lists['dicom']}",
        f"--trainer.default_root_dir={fit}",
        "--trainer.max_steps=1",
        "--trainer.check_val_every_n_epoch=1",
        "--report_evidence=false",
    )
    fitted = results_of(fit)  # one step: the source model's score before it, and the step's loss
    assert fitted["source_only/dice"] == pytest.approx(dice["nifti"], abs=1e-6) and math.isfinite(
        fitted["train/entropy"]
    )
    assert (fit / "version_0" / "checkpoints" / "last.ckpt").exists()
    for fmt in ("dicom", "nrrd"):
        root = tmp_path / f"predict_{fmt}"
        run_sfda(
            "predict",
            *source_only,
            f"--data.init_args.datalist={lists[fmt]}",
            f"--trainer.default_root_dir={root}",
            "--predict.mask_format=same",
        )
        written = root / "version_0" / "masks" / (f"colin27_{fmt}" + (".nrrd" if fmt == "nrrd" else ""))
        mask, reference = (
            read_volume(written),
            read_volume(tmp_path / ("image.nrrd" if fmt == "nrrd" else "image_dicom")),
        )
        assert mask.geometry.format == fmt and mask.geometry.shape == reference.geometry.shape == (
            181,
            217,
            181,
        )
        assert np.allclose(mask.geometry.affine, reference.geometry.affine, atol=1e-6)
        assert set(np.unique(mask.array)) <= {0.0, 1.0} and mask.array.sum() > 0.5 * brain.array.sum()
