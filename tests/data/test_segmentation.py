"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import numpy as np
import pytest
from kits.volumes import datalist, write_volume

from sfda.data import SegmentationDataModule, VolumeSpec

# data -----------------------------------------------------------------------------------------


@pytest.fixture
def volume_pair(tmp_path):
    image = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    label = np.zeros((16, 16, 8), dtype=np.uint8)
    label[4:12, 4:12, 2:6] = 1
    return image, label


def test_slices_have_stable_ids_and_target_labels_stay_hidden(tmp_path, volume_pair):
    image, label = volume_pair
    path = datalist(tmp_path, write_volume(tmp_path / "img.nii.gz", image),
                    write_volume(tmp_path / "lab.nii.gz", label), id="case7")
    spec = VolumeSpec(roi=(16, 16), spacing=(1.0, 1.0, 1.0))
    target = SegmentationDataModule(path, ["background", "brain"], role="target", input=spec,
                                    train_view="weak")
    assert target.sample_ids() == [f"case7:2:{i}" for i in range(8)]
    assert all(target.dataset("train", "weak")[(i, 3)]["label"] == -1 for i in range(8))
    assert target.dataset("eval")[0]["label"].sum() == label.sum()  # evaluation keeps labels for reporting
    source = SegmentationDataModule(path, ["background", "brain"], role="source", input=spec)
    assert int(source.dataset("train")[3]["label"].sum()) == int(label[:, :, 3].sum())
