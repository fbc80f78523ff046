"""Medical volume files in the formats hospitals store, read into one convention.

A datalist may name a NIfTI file (``.nii``, ``.nii.gz``), an NRRD file (``.nrrd``, ``.nhdr``), a
MetaImage (``.mha``, ``.mhd``) or a folder holding ONE DICOM series. The format is recognised from
the file's content (magic bytes or header) and must agree with its suffix. Every reader returns
``VolumeFile``: the voxels as ``(C, X, Y, Z)`` float32 and a 4x4 affine from voxel index to RAS
world millimetres (nibabel's and MONAI's convention).

Readers: nibabel for NIfTI (as before, so NIfTI numbers do not change); SimpleITK (ITK's maintained
readers, GDCM for DICOM) for the others, whose LPS geometry is converted to RAS. No reader here can
run code from a file.

A DICOM folder is refused when it holds several series (their SeriesInstanceUIDs are listed), no
DICOM at all, slices under one SeriesInstanceUID that differ in a tag one volume shares (Modality,
SeriesNumber, SeriesDescription, EchoNumbers, Rows, Columns, PixelSpacing, ImageOrientationPatient:
the tag and two slices are named), or a series whose slice positions are not evenly spaced (a missing
slice shows as a gap of twice the spacing). A NIfTI header whose voxel sizes ``pixdim[1..3]`` are zero,
negative or not finite is refused (nibabel would read a zero as 1 mm), and so is any volume whose
geometry gives a zero or non-finite voxel spacing.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatalistError(ValueError):
    """A datalist, or a volume it lists, is missing or inconsistent; the message names file and field."""


SUFFIXES = {"nifti": (".nii", ".nii.gz"), "nrrd": (".nrrd", ".nhdr"), "metaimage": (".mha", ".mhd")}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SLICE_GAP_TOLERANCE = 0.01  # relative deviation of a slice gap from the median spacing


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels are: its file, format, ``shape (X, Y, Z)``, ``affine (4, 4)`` voxel ->
    RAS mm, and for DICOM the series' slice files in order (a mask writer copies their study tags)."""

    path: Path
    format: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    slice_files: tuple[str, ...] = ()

    def describe(self) -> str:
        """Grid, spacing, orientation and origin in words (for error messages)."""
        import nibabel as nib

        spacing = np.linalg.norm(self.affine[:3, :3], axis=0).round(4).tolist()
        return (
            f"grid {'x'.join(map(str, self.shape))}, spacing {spacing} mm, orientation "
            f"{''.join(nib.aff2axcodes(self.affine))}, origin {self.affine[:3, 3].round(3).tolist()} mm (RAS)"
        )


@dataclass
class VolumeFile:
    """One volume as read: ``array (C, X, Y, Z)`` float32 and its geometry."""

    array: np.ndarray
    geometry: Geometry


def suffix_format(path: Path) -> str | None:
    name = path.name.lower()
    return next((fmt for fmt, suffixes in SUFFIXES.items() if name.endswith(suffixes)), None)


def content_format(path: Path) -> str | None:
    """The format a file's first bytes say it is: 'nifti', 'nrrd', 'metaimage', 'dicom-file' or None."""
    with open(path, "rb") as handle:
        head = handle.read(600)
    if head[:2] == b"\x1f\x8b":  # gzip: look inside
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(600)
        except (OSError, EOFError):
            return None
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head[128:132] == b"DICM":
        return "dicom-file"
    text = head.decode("latin-1").replace(" ", "")
    if text.startswith(("ObjectType=Image", "NDims=")) or "\nNDims=" in text[:300]:
        return "metaimage"
    return None


def volume_format(path: Path) -> str:
    """'nifti', 'nrrd', 'metaimage' or 'dicom' (a folder) for a datalist file, by content and suffix.

    Raises:
        DatalistError: unknown content, a suffix that contradicts the content, a single DICOM file
            (the series folder must be named), or a folder with no DICOM file in it.
    """
    if path.is_dir():
        if not any(is_dicom(file) for file in path.iterdir() if file.is_file()) and not series_ids(path):
            raise DatalistError(
                f"{path}: a folder with no DICOM file in it; expected a folder holding one DICOM series"
            )
        return "dicom"
    found, named = content_format(path), suffix_format(path)
    if found == "dicom-file":
        raise DatalistError(f"{path}: a single DICOM file; name the folder that holds its whole series")
    if found is None:
        expected = ", ".join(s for suffixes in SUFFIXES.values() for s in suffixes)
        raise DatalistError(
            f"{path}: not a readable volume (its first bytes are not NIfTI, NRRD or MetaImage; "
            f"truncated or another format?); expected {expected} or a DICOM series folder"
        )
    if named != found:
        raise DatalistError(
            f"{path}: the content is {found} but the suffix says {named or 'nothing known'}; "
            f"rename it with a {' or '.join(SUFFIXES[found])} suffix"
        )
    return found


def series_ids(folder: Path) -> tuple[str, ...]:
    """The SeriesInstanceUIDs GDCM finds in ``folder`` (also files without the 'DICM' preamble)."""
    import SimpleITK as sitk

    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def is_dicom(file: Path) -> bool:
    try:
        with open(file, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_volume(path: Path) -> VolumeFile:
    """Read any accepted volume (see the module docstring); errors name the file."""
    path = Path(path)
    fmt = volume_format(path)
    try:
        if fmt == "nifti":
            return read_nifti(path)
        if fmt == "dicom":
            return read_dicom_series(path)
        import SimpleITK as sitk

        return from_sitk(path, fmt, sitk.ReadImage(str(path)))
    except DatalistError:
        raise
    except Exception as err:  # nibabel, gzip and ITK raise many types for corrupt or truncated files
        raise DatalistError(
            f"{path}: unreadable {fmt} file ({type(err).__name__}: {str(err).strip()[:300]})"
        ) from err


def read_nifti(path: Path) -> VolumeFile:
    """A NIfTI file, refused when its voxel spacing (``pixdim[1..3]``) is zero, negative or not finite."""
    import nibabel as nib

    check_pixdim(path, raw_nifti_header(path))
    image = nib.load(str(path))
    array = np.asanyarray(image.dataobj).astype(np.float32)  # scaled as MONAI's NibabelReader does
    return volume_file(path, "nifti", channel_first(array, path), np.array(image.affine, dtype=np.float64))


def raw_nifti_header(path: Path):
    """The NIfTI-1 or NIfTI-2 header as written (nibabel's load turns a zero ``pixdim`` into 1 mm)."""
    import nibabel as nib

    with nib.openers.ImageOpener(str(path)) as handle:
        size = handle.read(4)
    kind = nib.Nifti2Header if 540 in (int.from_bytes(size, "little"), int.from_bytes(size, "big")) else None
    with nib.openers.ImageOpener(str(path)) as handle:
        return (kind or nib.Nifti1Header).from_fileobj(handle, check=False)


def check_pixdim(path: Path, header) -> None:
    """Refuse a NIfTI header whose voxel sizes ``pixdim[1..3]`` are not finite positive millimetres."""
    pixdim = np.asarray(header["pixdim"], dtype=np.float64)[1:4]
    bad = [i + 1 for i, v in enumerate(pixdim) if not (np.isfinite(v) and v > 0)]
    if bad:
        raise DatalistError(
            f"{path}: header field pixdim[{bad[0]}] = {pixdim[bad[0] - 1]:g} (voxel sizes pixdim[1..3] = "
            f"{pixdim.tolist()}); expected positive voxel sizes in mm: fix the header (e.g. nibabel's "
            "header.set_zooms) rather than let it read as 1 mm"
        )


def check_spacing(path: Path, affine: np.ndarray) -> None:
    """Refuse a voxel -> world affine with a zero or non-finite voxel size (any format)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.isfinite(affine).all() or not (spacing > 0).all():
        raise DatalistError(
            f"{path}: voxel spacing {spacing.round(6).tolist()} mm (from the file's geometry); expected "
            "three positive, finite voxel sizes"
        )


def volume_file(
    path: Path, fmt: str, array: np.ndarray, affine: np.ndarray, slice_files: tuple[str, ...] = ()
) -> VolumeFile:
    check_spacing(path, affine)
    shape = tuple(int(n) for n in array.shape[1:4])
    return VolumeFile(array, Geometry(Path(path), fmt, shape, affine, tuple(slice_files)))


def channel_first(array: np.ndarray, path: Path) -> np.ndarray:
    """``(X, Y, Z)`` or ``(X, Y, Z, C)`` -> ``(C, X, Y, Z)``."""
    if array.ndim == 3:
        return np.ascontiguousarray(array[None])
    if array.ndim == 4:
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))
    raise DatalistError(
        f"{path}: a volume of shape {list(array.shape)}; expected 3 spatial axes (and optionally channels)"
    )


def from_sitk(path: Path, fmt: str, image, slice_files: tuple[str, ...] = ()) -> VolumeFile:
    """A SimpleITK image (ITK's LPS geometry, array ``(Z, Y, X[, C])``) as a VolumeFile."""
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise DatalistError(f"{path}: a {image.GetDimension()}-D image; expected a 3-D volume")
    array = np.moveaxis(
        sitk.GetArrayFromImage(image).astype(np.float32), (0, 1, 2), (2, 1, 0)
    )  # -> (X, Y, Z[, C])
    return volume_file(path, fmt, channel_first(array, path), sitk_affine(image), slice_files)


def sitk_affine(image) -> np.ndarray:
    """Voxel index -> RAS mm of a SimpleITK image: ``diag(-1, -1, 1) (D diag(spacing) i + origin)``."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


def lps_geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(origin, spacing, direction) in ITK's LPS terms of a voxel -> RAS affine (inverse of sitk_affine)."""
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(lps[:3, 3].tolist()), tuple(spacing.tolist()), tuple(direction.flatten().tolist())


SERIES_TAGS = {  # tags every slice of one volume shares; differing values mean several series in one
    "0008|0060": "Modality",
    "0020|0011": "SeriesNumber",
    "0008|103e": "SeriesDescription",
    "0018|0086": "EchoNumbers",
    "0028|0002": "SamplesPerPixel",
    "0028|0010": "Rows",
    "0028|0011": "Columns",
    "0028|0030": "PixelSpacing",
    "0020|0037": "ImageOrientationPatient",
}
NUMERIC_TAGS = ("0028|0030", "0020|0037")  # decimal strings: compared as numbers
POSITION_TAG = "0020|0032"  # ImagePositionPatient


def read_dicom_series(folder: Path) -> VolumeFile:
    """The one series in ``folder``, after checking it has one series, every slice agrees on the series'
    tags and the slices are evenly spaced."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = series_ids(folder)
    if not series:
        raise DatalistError(f"{folder}: no readable DICOM image series in the folder")
    if len(series) > 1:
        raise DatalistError(
            f"{folder}: {len(series)} DICOM series in one folder (SeriesInstanceUID "
            f"{', '.join(series)}); expected one series per folder: move each into its own folder"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    headers = dicom_headers(files)
    check_series_tags(folder, files, headers)
    check_slice_spacing(folder, files, headers)
    reader.SetFileNames(files)
    return from_sitk(folder, "dicom", reader.Execute(), tuple(files))


def dicom_headers(files: tuple[str, ...]) -> list[dict[str, str]]:
    """Per slice file, the values of ``SERIES_TAGS`` and ImagePositionPatient it holds (header only)."""
    import SimpleITK as sitk

    headers = []
    for file in files:
        info = sitk.ImageFileReader()
        info.SetFileName(file)
        info.ReadImageInformation()
        tags = (*SERIES_TAGS, POSITION_TAG)
        headers.append({tag: info.GetMetaData(tag).strip() for tag in tags if info.HasMetaDataKey(tag)})
    return headers


def same_tag_value(tag: str, first: str | None, other: str | None) -> bool:
    """Whether two slices' values of ``tag`` agree (decimal strings as numbers, to 1e-4)."""
    if first is None or other is None or tag not in NUMERIC_TAGS:
        return first == other
    try:
        a, b = (np.array([float(v) for v in value.split("\\")]) for value in (first, other))
    except ValueError:
        return first == other
    return a.shape == b.shape and bool(np.allclose(a, b, atol=1e-4))


def shown(value: str | None) -> str:
    """A DICOM tag value for a message: quoted, or 'absent'."""
    return "absent" if value is None else repr(value)


def check_series_tags(folder: Path, files: tuple[str, ...], headers: list[dict[str, str]]) -> None:
    """Refuse slices under one SeriesInstanceUID that differ in a tag of ``SERIES_TAGS`` (for example CT
    and PET slices, or two echoes, mixed in one "series"), naming the tag and two slices."""
    for tag, name in SERIES_TAGS.items():
        first = headers[0].get(tag)
        for file, header in zip(files[1:], headers[1:], strict=True):
            if not same_tag_value(tag, first, header.get(tag)):
                raise DatalistError(
                    f"{folder}: one SeriesInstanceUID holds slices that differ in {name} "
                    f"({tag.replace('|', ',').upper()}): {shown(first)} in {Path(files[0]).name}, "
                    f"{shown(header.get(tag))} in {Path(file).name}; expected every slice of one volume to "
                    "share it: put each series (modality, echo, acquisition) in its own folder"
                )


def slice_positions(files: tuple[str, ...], headers: list[dict[str, str]]) -> np.ndarray:
    """Each file's ImagePositionPatient projected on the slice normal (mm)."""
    positions, normal = [], None
    for file, header in zip(files, headers, strict=True):
        if POSITION_TAG not in header:
            raise DatalistError(
                f"{file}: DICOM slice without ImagePositionPatient (0020,0032); cannot place it in the volume"
            )
        if normal is None:
            if "0020|0037" not in header:
                raise DatalistError(
                    f"{file}: DICOM slice without ImageOrientationPatient (0020,0037); cannot place it in "
                    "the volume"
                )
            row_col = [float(v) for v in header["0020|0037"].split("\\")]
            normal = np.cross(row_col[:3], row_col[3:])
        positions.append(float(np.dot(normal, [float(v) for v in header[POSITION_TAG].split("\\")])))
    return np.array(positions)


def check_slice_spacing(folder: Path, files: tuple[str, ...], headers: list[dict[str, str]]) -> None:
    """Refuse a series whose consecutive slice gaps differ from their median (missing or uneven slices)."""
    if len(files) < 2:
        raise DatalistError(
            f"{folder}: a DICOM series of {len(files)} slice; expected a 3-D volume of several slices"
        )
    unordered = slice_positions(files, headers)
    order = np.argsort(unordered)
    positions = unordered[order]
    gaps = np.diff(positions)
    spacing = float(np.median(gaps))
    if spacing <= 0:
        raise DatalistError(f"{folder}: DICOM slices at repeated positions; expected one slice per position")
    bad = np.flatnonzero(np.abs(gaps - spacing) > SLICE_GAP_TOLERANCE * spacing)
    if bad.size:
        i = int(bad[0])
        first, second = Path(files[order[i]]).name, Path(files[order[i + 1]]).name
        missing = round(gaps[i] / spacing) - 1
        what = (
            f"{missing} missing slice(s)"
            if missing >= 1 and abs(gaps[i] / spacing - round(gaps[i] / spacing)) < 0.05
            else "uneven slice spacing"
        )
        raise DatalistError(
            f"{folder}: {what} in the DICOM series: {gaps[i]:.3f} mm between {first} and {second}, "
            f"expected {spacing:.3f} mm (the median gap; {bad.size} gap(s) differ)"
        )
