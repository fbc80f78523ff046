"""DICOM-SEG output (``--predict.mask_format dicom-seg``): a CT series written here with pydicom (slices in
shuffled files, descending positions, non-square pixels), the SEG written by the writer and by
``sfda predict``, read back with highdicom and compared with the NIfTI mask of the same prediction in RAS;
and the refusal of a non-DICOM input before anything is written."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from kits.bad_input import assert_refused, recipe, sfda
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sfda.data import VolumeSpec
from sfda.data.volume_files import LPS_TO_RAS, Geometry, read_volume
from sfda.data.volume_writing import write_volume
from sfda.models import SourceArtifact
from sfda.models.segmentation import unet_architecture
from sfda.tasks.writers.dicom_seg import write_dicom_seg

CLASSES = ["background", "brain", "edema"]
ROWS, COLUMNS, SLICES = 12, 16, 6
PIXEL_SPACING = (0.8, 0.7)  # between rows, between columns (mm)
SLICE_GAP = 2.5


def ct_series(folder: Path, seed: int = 0) -> Path:
    """A CT series as a scanner writes it: one file per slice, named in shuffled order, slices going down
    (feet-first positions) with InstanceNumber."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for n, name in enumerate(rng.permutation(SLICES)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.Manufacturer = "", "test"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, n + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-5.0, 3.0, 40.0 - SLICE_GAP * n]
        ds.PixelSpacing, ds.SliceThickness = list(PIXEL_SPACING), SLICE_GAP
        ds.Rows, ds.Columns, ds.SamplesPerPixel = ROWS, COLUMNS, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = rng.integers(0, 1000, (ROWS, COLUMNS)).astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{name:04d}", enforce_file_format=True)
    return folder


def ras_volume(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array (X, Y, Z)`` and its voxel -> RAS ``affine`` reoriented to the closest RAS axes."""
    image = nib.as_closest_canonical(nib.Nifti1Image(array.astype(np.uint8), affine))
    return np.asarray(image.dataobj), image.affine


def seg_in_ras(path: Path, series: Path) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM-SEG read with highdicom as one label volume on its source series' volume (the SEG holds only
    the frames with voxels), in RAS (highdicom: ``(slice, row, column)`` -> LPS)."""
    source = hd.get_volume_from_series([pydicom.dcmread(f) for f in series.iterdir()])
    volume = hd.seg.segread(path).get_volume(combine_segments=True).match_geometry(source)
    affine = LPS_TO_RAS @ volume.affine[:, [2, 1, 0, 3]]
    return ras_volume(np.asarray(volume.array).transpose(2, 1, 0), affine)


def frames_by_source(path: Path, series: Path) -> list[tuple[pydicom.Dataset, np.ndarray]]:
    """Each source slice's header and the SEG's label frame ``(rows, columns)`` that references it."""
    seg = hd.seg.segread(path)
    sources = [pydicom.dcmread(file, stop_before_pixels=True) for file in series.iterdir()]
    return [(source, seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True,
                                                        assert_missing_frames_are_empty=True)[0])
            for source in sources]


def assert_seg_references(path: Path, series: Path, method: str) -> pydicom.Dataset:
    """The SEG names the series' instances, study and frame of reference, the classes, ``sfda <method>``."""
    seg = pydicom.dcmread(path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series.iterdir())]
    referenced = seg.ReferencedSeriesSequence
    assert len(referenced) == 1 and referenced[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced[0].ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources
    }
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.PatientID == "P1"
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID and seg.SegmentationType == "BINARY"
    segments = seg.SegmentSequence
    assert [s.SegmentLabel for s in segments] == CLASSES[1:]
    assert [s.SegmentNumber for s in segments] == [1, 2]
    types = [s.SegmentedPropertyTypeCodeSequence[0] for s in segments]
    assert [(t.CodingSchemeDesignator, t.CodeValue) for t in types] == [
        ("SCT", "12738006"),  # Brain
        ("SCT", "79654002"),  # Edema
    ]
    categories = [s.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning for s in segments]
    assert categories == ["Anatomical Structure", "Morphologically Abnormal Structure"]
    algorithm = segments[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == f"sfda {method}" and segments[0].SegmentAlgorithmType == "AUTOMATIC"
    return seg


def test_the_writer_puts_each_voxel_of_the_mask_on_its_source_slice(tmp_path):
    series = ct_series(tmp_path / "ct")
    geometry = read_volume(series).geometry
    assert geometry.shape == (COLUMNS, ROWS, SLICES)
    mask = np.zeros(geometry.shape, np.uint8)  # asymmetric in every axis: a flip or transpose shows
    mask[2:9, 1:5, 1:4] = 1
    mask[10:15, 7:11, 3] = 2
    mask[0, 0, 5] = 2
    path = write_dicom_seg(mask, geometry, CLASSES, "SourceOnly", tmp_path / "masks" / "ct.dcm")
    nifti = write_volume(mask, geometry, tmp_path / "masks" / "ct.nii.gz")
    assert_seg_references(path, series, "SourceOnly")
    seg_mask, seg_affine = seg_in_ras(path, series)
    image = nib.load(nifti)
    nifti_mask, nifti_affine = ras_volume(np.asarray(image.dataobj), image.affine)
    assert np.allclose(seg_affine, nifti_affine, atol=1e-4)
    assert np.array_equal(seg_mask, nifti_mask) and (seg_mask == 2).sum() == 21
    # per source slice, as a PACS reads it: frame of the file == the mask's plane at that file's position
    for source, frame in frames_by_source(path, series):
        k = round((40.0 - float(source.ImagePositionPatient[2])) / SLICE_GAP)  # geometry's Z goes up
        assert np.array_equal(frame, mask[:, :, SLICES - 1 - k].T), source.filename
    with pytest.raises(FileExistsError, match="never replaces"):
        write_dicom_seg(mask, geometry, CLASSES, "SourceOnly", path)


def test_a_secondary_capture_series_without_pixel_spacing_gets_the_grids(tmp_path):
    """A secondary-capture series (sfda's own ``mask_format same`` series, Modality OT) whose slices have no
    PixelSpacing (GDCM writes it or not, 1 mm is then assumed): the SEG takes the grid's."""
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    grid = Geometry(tmp_path / "none.nii.gz", "synthetic", (COLUMNS, ROWS, SLICES), affine)
    scan = np.random.default_rng(1).integers(0, 1000, grid.shape).astype(np.int16)
    series = write_volume(scan, grid, tmp_path / "sc")
    for file in series.iterdir():
        ds = pydicom.dcmread(file)
        ds.pop("PixelSpacing", None)
        ds.save_as(file)
    assert "PixelSpacing" not in pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    mask = (scan > 800).astype(np.uint8)
    path = write_dicom_seg(mask, read_volume(series).geometry, CLASSES[:2], "Tent", tmp_path / "sc.dcm")
    seg = hd.seg.segread(path)
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [1.0, 1.0]
    for source, frame in frames_by_source(path, series):  # sfda's writer numbers slices 1.. along Z
        assert np.array_equal(frame, mask[:, :, source.InstanceNumber - 1].T), source.filename
    assert mask.any() and not mask.all()


# through `sfda predict` -------------------------------------------------------------------------------
def unet_artifact(path: Path) -> Path:
    """An untrained tiny 2-D UNet for CLASSES (seeded: its masks hold every class on the CT series)."""
    torch.manual_seed(0)
    architecture = unet_architecture(2, 1, len(CLASSES), channels=(4, 8), strides=(2,), num_res_units=1)
    from monai.networks.nets import UNet

    SourceArtifact(architecture=architecture, state_dict=UNet(**architecture["kwargs"]).state_dict(),
                   class_names=CLASSES, task="segmentation",
                   input=VolumeSpec(mode="2d", roi=(16, 16), spacing=(1.5, 1.5, 3.0), slice_axis=2)
                   ).save(path)
    return path


def predict_recipe(root: Path, image: Path) -> Path:
    datalist = root / f"{image.name}.json"
    datalist.write_text(f'{{"training": [{{"id": "case", "image": "{image}"}}]}}')
    source = str(unet_artifact(root / "unet.pt"))
    model = {"class_path": "sfda.methods.SourceOnly", "init_args": {"source": source}}
    data = {"class_path": "sfda.data.SegmentationDataModule",
            "init_args": {"datalist": str(datalist), "class_names": CLASSES, "role": "target",
                          "batch_size": 4}}
    return recipe(root / f"{image.name}.yaml", model, data, {"accelerator": "cpu", "devices": 1})


def test_sfda_predict_writes_one_dicom_seg_equal_to_its_nifti_mask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SFDA_RUN_VERSION", raising=False)
    series = ct_series(tmp_path / "ct")
    config = predict_recipe(tmp_path, series)
    masks = {}
    for mask_format in ("dicom-seg", "nifti"):
        root = tmp_path / mask_format
        code, text = sfda("predict", "--config", str(config), f"--trainer.default_root_dir={root}",
                          f"--predict.mask_format={mask_format}")
        assert code == 0, text[-3000:]
        masks[mask_format] = sorted((root / "version_0" / "masks").iterdir())
    assert [p.name for p in masks["dicom-seg"]] == ["case.dcm"] and [p.name for p in masks["nifti"]] == [
        "case.nii.gz"
    ]
    assert_seg_references(masks["dicom-seg"][0], series, "SourceOnly")
    seg_mask, seg_affine = seg_in_ras(masks["dicom-seg"][0], series)
    image = nib.load(masks["nifti"][0])
    nifti_mask, nifti_affine = ras_volume(np.asarray(image.dataobj), image.affine)
    assert np.allclose(seg_affine, nifti_affine, atol=1e-4) and np.array_equal(seg_mask, nifti_mask)
    assert set(np.unique(nifti_mask)) == {0, 1, 2}  # every segment holds voxels: the comparison means a lot


def test_dicom_seg_for_a_nifti_input_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SFDA_RUN_VERSION", raising=False)
    scan = tmp_path / "scan.nii.gz"
    volume = np.random.default_rng(0).integers(0, 1000, (COLUMNS, ROWS, SLICES)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.8, 2.5, 1.0])), str(scan))
    config = predict_recipe(tmp_path, scan)
    assert_refused(
        ["predict", "--config", str(config), f"--trainer.default_root_dir={tmp_path / 'runs'}",
         "--predict.mask_format=dicom-seg"],
        tmp_path,
        f"predict.mask_format = dicom-seg: {scan} is a nifti file",
        "expected a DICOM series folder as the input",
    )
