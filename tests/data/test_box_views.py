"""Box datasets: the three annotation formats, the checks, tiles, views of one geometry, hidden
target boxes."""

import numpy as np
import torch
from kits.detection import digit_sets

from sfda.data import DetectionDataModule
from sfda.data.detection import collate_boxes
from sfda.data.transforms import InputSpec

SPEC = InputSpec(size=64, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


def test_weak_and_strong_views_share_one_geometry_and_target_boxes_stay_hidden(tmp_path):
    sets = digit_sets(tmp_path, train=8, test=2)
    source = DetectionDataModule(
        [str(sets["plain"])], role="source", class_names=[str(d) for d in range(10)], input=SPEC
    )
    source.setup()
    data = source.dataset("train", train=True, strong=True)
    flipped = 0
    for index in range(len(data)):
        item = data[(index, 1000 + index)]
        plain = source.dataset("train")[index]
        assert item["strong"].shape == item["image"].shape == (3, 64, 64)
        assert len(item["boxes"]) == len(plain["boxes"]) > 0
        same = torch.allclose(item["boxes"], plain["boxes"])
        mirrored = torch.allclose(item["boxes"][:, [2, 0]], 64 - plain["boxes"][:, [0, 2]], atol=1e-3)
        assert same or mirrored
        flipped += mirrored and not same
        assert not torch.equal(item["strong"], item["image"])  # photometric changes on the weak view's pixels
    assert 0 < flipped < len(data)
    again = data[(0, 1000)]
    assert torch.equal(
        again["strong"], data[(0, 1000)]["strong"]
    )  # seeded: the same sample draws the same views
    target = DetectionDataModule(
        [str(sets["photo"])], eval=[str(sets["photo_test"])], role="target", input=SPEC
    )
    target.adopt_class_names([str(d) for d in range(10)])
    batch = collate_boxes([target.dataset("train")[i] for i in range(2)])
    assert all(len(b) == 0 for b in batch["boxes"]) and not batch["labelled"].any()
    evaluation = collate_boxes([target.dataset("val")[i] for i in range(2)])
    assert all(len(b) > 0 for b in evaluation["boxes"]) and evaluation["labelled"].all()
    assert evaluation["index"].tolist() == [0, 1] and evaluation["image"].shape == (2, 3, 64, 64)


def test_the_strong_view_moves_no_pixel():
    from sfda.data.box_views import photometric, seed_views

    picture = np.zeros((64, 64, 3), np.uint8)
    picture[:, :32] = 255  # a left-right edge: a flip, shift or crop would move it
    strong = photometric()
    for seed in range(10):
        seed_views(strong, seed)
        out = strong(image=picture)["image"].astype(float).mean(axis=2)
        left, right = out[:, :28], out[:, 36:]
        assert np.median(left) > np.median(right)  # erasing may cover patches, never the whole side


def test_the_strong_view_transforms_draw_independently():
    from sfda.data.box_views import photometric, seed_views

    picture = (np.random.default_rng(0).random((32, 32, 3)) * 50).astype(np.uint8)
    strong, untouched = photometric(), 0
    for seed in range(200):
        seed_views(strong, seed)
        untouched += np.array_equal(strong(image=picture)["image"], picture)
    # all six transforms skipped: 0.2 * 0.8 * 0.5 * 0.3 * 0.5 * 0.7 = 0.8%;
    # with albumentations' shared seed: 20%
    assert untouched <= 8
