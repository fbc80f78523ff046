"""3-D patch sampling within the foreground's bounding box (``VolumeSpec.patch_region``): patches that hold
the same content whatever the field of view, the whole-volume sampling that older artifacts were trained
with kept draw for draw, and the spec's fields checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfda.data import VolumeSpec
from sfda.data.segmentation import PatchDataset, foreground_box, patch_corner
from sfda.data.volumes import Volume

ROI = (8, 8, 8)


def head(shape=(20, 18, 16), margin=(0, 0, 0), seed: int = 0) -> Volume:
    """A 'head' (random intensities in [0.2, 1]) of ``shape`` in a field of air ``margin`` voxels wide."""
    rng = np.random.default_rng(seed)
    image = np.zeros([s + 2 * m for s, m in zip(shape, margin, strict=True)], dtype=np.float32)
    inner = tuple(slice(m, m + s) for s, m in zip(shape, margin, strict=True))
    image[inner] = rng.uniform(0.2, 1.0, shape)
    label = np.zeros(image.shape, dtype=np.int64)
    label[inner] = 1
    return Volume(name="v", image=torch.from_numpy(image)[None], label=torch.from_numpy(label),
                  affine=torch.eye(4), image_path=None, label_path=None)


def spec(region: str) -> VolumeSpec:
    return VolumeSpec(mode="3d", roi=ROI, patch_region=region)


def test_foreground_patches_hold_the_same_content_whatever_the_air_around_the_head():
    tight, wide = head(), head(margin=(12, 3, 20))
    a = PatchDataset([tight], spec("foreground"), 16, seed=3)
    b = PatchDataset([wide], spec("foreground"), 16, seed=3)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(16))
    # over the whole volume the wide field of view puts air into the patches: the statistics would move
    c = PatchDataset([wide], spec("volume"), 16, seed=3)
    air = np.mean([float((c[i]["image"] < 0.05).float().mean()) for i in range(16)])
    assert air > 0.2
    assert all(float((a[i]["image"] < 0.05).float().mean()) == 0 for i in range(16))


def test_whole_volume_sampling_draws_the_corners_older_artifacts_were_trained_on():
    volume = head(margin=(4, 4, 4))
    corners = PatchDataset([volume], spec("volume"), 8, seed=5).corners
    shape = volume.image.shape[1:]
    rngs = [np.random.default_rng([5, i]) for i in range(8)]  # the former draw: one generator per patch
    old = [tuple(int(rng.integers(0, s - r + 1)) for s, r in zip(shape, ROI, strict=True)) for rng in rngs]
    assert corners == old


def test_a_box_smaller_than_the_patch_is_centred_on_and_the_patch_stays_in_the_volume():
    image = torch.zeros(1, 30, 30, 30)
    image[0, 10:14, 0:3, 25:30] = 1.0
    box = foreground_box(image, 0.05)
    assert box == ((10, 14), (0, 3), (25, 30))
    rng = np.random.default_rng(0)
    for _ in range(20):
        corner = patch_corner(rng, (30, 30, 30), ROI, box)
        assert corner[0] == 8  # (10 + 14 - 8) // 2: centred on the box
        assert all(0 <= c <= 30 - r for c, r in zip(corner, ROI, strict=True))


def test_an_image_without_foreground_samples_the_whole_volume():
    assert foreground_box(torch.zeros(1, 5, 6, 7), 0.05) == ((0, 5), (0, 6), (0, 7))


def test_a_spec_from_before_the_option_reads_as_whole_volume_sampling():
    old = {k: v for k, v in spec("foreground").to_dict().items()
           if k not in ("patch_region", "foreground_threshold")}
    assert VolumeSpec.from_dict(old).patch_region == "volume"
    assert VolumeSpec.from_dict(spec("foreground").to_dict()) == spec("foreground")
    assert VolumeSpec(mode="3d", roi=ROI).patch_region == "foreground"  # the default of new recipes


@pytest.mark.parametrize("field, value, needle", [
    ("patch_region", "head", "spec.patch_region: expected 'foreground' or 'volume', got 'head'"),
    ("foreground_threshold", 1.5,
     "spec.foreground_threshold: expected a scaled intensity in [0, 1), got 1.5"),
])
def test_bad_patch_region_fields_are_refused_by_name(field, value, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        VolumeSpec(mode="3d", roi=ROI, **{field: value})
