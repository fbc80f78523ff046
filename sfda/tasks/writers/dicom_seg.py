"""``sfda predict --predict.mask_format dicom-seg``: a predicted mask as one DICOM Segmentation object.

The mask, already on the input series' voxel grid (``masks.to_original_grid``), is written as ONE binary
DICOM-SEG (highdicom) that references every instance of the source series and joins its study and Frame of
Reference as a new series, so a PACS shows it over the scan. One segment per foreground class, labelled
with the class name; its segmented property type is the DICOM code of that name where CID 7151 has one
(``brain`` -> SCT 12738006 "Brain", under its CID 7150 category), otherwise a private code (scheme
``99SFDA``) under "Anatomical Structure". The algorithm is identified as ``sfda <method>``.
Only an input that is a DICOM series can be referenced: any other input is refused before prediction.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...data.volume_files import LPS_TO_RAS, Geometry
from ...run.checks import RunConfigError
from ...run.version import __version__

SEG_SERIES_NUMBER = 9001  # new series in the source's study; high, away from the scanner's own numbers
PRIVATE_SCHEME = "99SFDA"  # a class name DICOM has no code for (PS3.3 8.2: "99" local coding schemes)


def check_dicom_inputs(volumes) -> None:
    """Refuse DICOM-SEG output for any volume whose input is not a DICOM series folder, naming it."""
    for volume in volumes:
        if volume.original.format != "dicom":
            raise RunConfigError(
                f"predict.mask_format = dicom-seg: {volume.image_path} is a {volume.original.format} file; "
                "a DICOM Segmentation references the instances of its source series, so expected a DICOM "
                "series folder as the input (or --predict.mask_format nifti or same for this datalist)"
            )


def slice_index(dataset, affine: np.ndarray, shape: tuple[int, int, int]) -> int:
    """Index ``k`` on the grid ``affine (4, 4)`` voxel -> RAS of the slice whose ImagePositionPatient (LPS mm)
    is voxel ``(0, 0, k)``; raises ValueError when the file does not lie on the grid."""
    position = LPS_TO_RAS @ [*map(float, dataset.ImagePositionPatient), 1.0]
    i, j, k = (np.linalg.inv(affine) @ position)[:3]
    index = int(round(k))
    if max(abs(i), abs(j), abs(k - index)) > 1e-3 or not 0 <= index < shape[2] or (
        (dataset.Columns, dataset.Rows) != shape[:2]
    ):
        raise ValueError(
            f"{dataset.filename}: the DICOM slice is not a plane of its series' grid "
            f"(voxel {[round(float(v), 3) for v in (i, j, k)]}, {dataset.Columns}x{dataset.Rows} pixels, "
            f"grid {list(shape)})"
        )
    return index


def source_slices(geometry: Geometry) -> tuple[list, list[int]]:
    """The series' files read with pydicom (headers only) and each one's index ``k`` on ``geometry``. A
    slice without PixelSpacing (a secondary capture, e.g. ``mask_format same``'s) gets the grid's in memory.
    """
    import pydicom

    datasets = [pydicom.dcmread(file, stop_before_pixels=True) for file in geometry.slice_files]
    spacing = np.linalg.norm(geometry.affine[:3, :3], axis=0)  # X: between columns, Y: between rows
    for dataset in datasets:
        if "PixelSpacing" not in dataset:
            dataset.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]
    return datasets, [slice_index(d, geometry.affine, geometry.shape) for d in datasets]


def property_codes(name: str):
    """(category, type) codes of a class name: CID 7151's code for it with its CID 7150 category, or a
    private code under "Anatomical Structure"."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    key = re.sub(r"[^a-z0-9]", "", name.lower())
    types = {keyword.lower(): keyword for keyword in codes.cid7151.dir()}
    if key not in types:
        value = (key or "class")[:16]
        return codes.cid7150.AnatomicalStructure, CodedConcept(value, PRIVATE_SCHEME, name[:64])
    keyword = types[key]
    categories = ((codes.cid7159, "MorphologicallyAbnormalStructure"), (codes.cid7166, "Tissue"),
                  (codes.cid7157, "PhysicalObject"), (codes.cid7158, "PhysicalObject"))
    category = next((c for group, c in categories if keyword in group.dir()), "AnatomicalStructure")
    return getattr(codes.cid7150, category), getattr(codes.cid7151, keyword)


def segment_descriptions(class_names: list[str], method: str) -> list:
    """One highdicom SegmentDescription per foreground class (segment ``c`` = class ``c`` of the mask)."""
    from highdicom import AlgorithmIdentificationSequence
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription
    from pydicom.sr.codedict import codes

    algorithm = AlgorithmIdentificationSequence(
        name=f"sfda {method}"[:64], family=codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters={"method": method},
    )
    return [
        SegmentDescription(c, name[:64], *property_codes(name), SegmentAlgorithmTypeValues.AUTOMATIC,
                           algorithm_identification=algorithm)
        for c, name in enumerate(class_names[1:], start=1)
    ]


def write_dicom_seg(mask: np.ndarray, geometry: Geometry, class_names: list[str], method: str,
                    path: Path) -> Path:
    """Write ``mask (X, Y, Z)`` (class indices, 0 = background) on the DICOM series ``geometry`` as one
    binary DICOM-SEG at ``path`` referencing the series' instances; never replaces an existing file."""
    import highdicom as hd

    if tuple(mask.shape) != tuple(geometry.shape):
        raise ValueError(
            f"{path}: mask of shape {list(mask.shape)} does not fit the grid {list(geometry.shape)}"
        )
    if path.exists():
        raise FileExistsError(f"{path}: exists already; a written mask never replaces a file")
    datasets, indices = source_slices(geometry)
    frames = np.ascontiguousarray(mask.transpose(2, 1, 0)[indices], dtype=np.uint8)  # (slice, row, column)
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(class_names, method),
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="sfda",
        manufacturer_model_name=f"sfda {method}"[:64],
        software_versions=__version__,
        device_serial_number="none",
        content_label="SFDA",
        content_description=f"sfda {method} predicted mask"[:64],
        series_description="sfda predicted mask",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path
