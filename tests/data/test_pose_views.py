"""Pose data: the semi-synthetic figure generator (deterministic, human-like, occlusion labelled)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfda.data.benchmarks.pose_figures import generate
from sfda.data.pose import PoseDataModule
from sfda.data.pose_views import crop_matrix, invert, warp_points
from sfda.data.transforms import InputSpec


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    return {part: generate(root, *part.split("_"), count=40) for part in ("flat_train", "photo_train")}


# the loader: crops, views, heatmaps ----------------------------------------------------------------
SPEC = InputSpec(size=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def data(figures, role="source", **kwargs) -> PoseDataModule:
    module = PoseDataModule([str(figures["flat_train"])], role=role, input=SPEC, batch_size=4, **kwargs)
    module.setup()
    return module


def peak(heatmap: torch.Tensor) -> np.ndarray:
    """(x, y) of a heatmap's maximum, in heatmap pixels."""
    row, col = divmod(int(heatmap.argmax()), heatmap.shape[-1])
    return np.array([col, row])


def test_a_plain_crop_puts_each_heatmap_peak_on_its_keypoint(figures):
    module = data(figures)
    item = module.dataset("train")[0]
    assert item["image"].shape == (3, 64, 64) and item["heatmaps"].shape == (16, 16, 16)
    person = module.splits["train"][0]
    points = warp_points(person.keypoints[:, :2], item["matrix"].double().numpy())
    assert np.allclose(points, item["keypoints"].numpy(), atol=1e-4)
    assert np.allclose(warp_points(points, invert(item["matrix"].double().numpy())), person.keypoints[:, :2])
    for k in np.flatnonzero(item["weight"].numpy()):
        assert np.abs(peak(item["heatmaps"][k]) - (item["keypoints"][k].numpy() + 0.5) / 4 + 0.5).max() <= 0.5
        assert float(item["heatmaps"][k].max()) >= np.exp(-1) - 1e-6  # at most half a pixel off-centre
    assert (item["weight"].numpy() == (person.keypoints[:, 2] > 0)).all()


def test_a_flipped_view_mirrors_the_image_and_swaps_left_and_right(figures):
    module = data(figures)
    dataset = module.dataset("train")
    person, image = module.splits["train"][0], dataset.load(0)
    plain = dataset.view_of(0, image, crop_matrix(person.box, 64), None)
    mirrored = dataset.view_of(0, image, crop_matrix(person.box, 64, flip=True), None)
    assert torch.allclose(mirrored["image"], plain["image"].flip(-1), atol=1e-5)
    order = module.skeleton.flip_order()
    assert order[0] == 5 and order[5] == 0 and order[6] == 6  # r_ankle <-> l_ankle, pelvis stays
    expected = plain["keypoints"][order].clone()
    expected[:, 0] = 63 - expected[:, 0]
    assert torch.allclose(mirrored["keypoints"], expected, atol=1e-4)
