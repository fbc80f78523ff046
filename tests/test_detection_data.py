"""Box datasets: the three annotation formats, the checks, tiles, views of one geometry, hidden
target boxes."""

import json

import numpy as np
import pytest
import torch
from detection_kit import digit_sets
from PIL import Image

from sfda.data import DetectionDataModule
from sfda.data.boxes import BoxRecord, check_records, read_annotations
from sfda.data.detection import collate_boxes
from sfda.data.tiles import tile_record, tile_windows
from sfda.data.transforms import InputSpec

SPEC = InputSpec(size=64, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


def image(path, width=80, height=60, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def voc(path, filename, boxes, width=80, height=60):
    objects = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, (a, b, c, d) in boxes
    )
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{width}</width>"
        f"<height>{height}</height></size>{objects}</annotation>"
    )
    return path


def test_voc_coco_and_csv_give_the_same_records(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png", seed=1)
    boxes = [("tree", (10, 5, 30, 25)), ("car", (40, 20, 70, 50))]
    voc(tmp_path / "a.xml", "a.png", boxes)
    (tmp_path / "boxes.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\na.png,10,5,30,25,tree\na.png,40,20,70,50,car\nb.png,,,,,\n"
    )
    coco = {
        "images": [{"id": 7, "file_name": "a.png"}, {"id": 8, "file_name": "b.png"}],
        "categories": [{"id": 1, "name": "tree"}, {"id": 2, "name": "car"}],
        "annotations": [
            {"image_id": 7, "category_id": 1, "bbox": [10, 5, 20, 20]},
            {"image_id": 7, "category_id": 2, "bbox": [40, 20, 30, 30]},
        ],
    }
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    from_voc = read_annotations(str(tmp_path / "a.xml"))[0]
    csv_records = read_annotations(str(tmp_path / "boxes.csv"))
    coco_records = read_annotations(str(tmp_path / "boxes.json"))
    for record in (csv_records[0], coco_records[0]):
        assert np.array_equal(record.boxes, from_voc.boxes) and record.labels == from_voc.labels == [
            "tree",
            "car",
        ]
        assert record.image == str(tmp_path / "a.png")
    assert (
        len(csv_records[1].boxes) == 0 and len(coco_records[1].boxes) == 0
    )  # an image without boxes is allowed
    check_records(csv_records + coco_records + [from_voc], ["tree", "car"])


@pytest.mark.parametrize(
    "box, needle",
    [
        ((10, 5, 10, 25), "'xmax' must be greater than 'xmin'"),
        ((10, 25, 30, 5), "'ymax' must be greater than 'ymin'"),
        ((10, 5, 90, 25), "outside the image of 80x60 pixels"),
        ((-2, 5, 30, 25), "outside the image"),
    ],
)
def test_a_bad_box_is_refused_naming_file_image_and_field(tmp_path, box, needle):
    image(tmp_path / "a.png")
    xml = voc(tmp_path / "a.xml", "a.png", [("tree", box)])
    with pytest.raises(ValueError, match="a.xml: image 'a.png', box 0") as err:
        check_records(read_annotations(str(xml)), ["tree"])
    assert needle in str(err.value)


def test_a_label_outside_the_class_names_and_a_missing_image_are_refused(tmp_path):
    image(tmp_path / "a.png")
    with pytest.raises(ValueError, match="field 'label' = 'bus' is not one of class_names"):
        check_records(
            read_annotations(str(voc(tmp_path / "a.xml", "a.png", [("bus", (1, 1, 9, 9))]))), ["tree"]
        )
    with pytest.raises(FileNotFoundError, match="b.xml: names image '.*gone.png', which does not exist"):
        check_records(read_annotations(str(voc(tmp_path / "b.xml", "gone.png", []))), ["tree"])


def test_tiles_cover_the_image_overlap_and_keep_boxes_mostly_inside():
    windows = tile_windows(1000, 700, 400, 0.1)
    xs, ys = sorted({w[0] for w in windows}), sorted({w[1] for w in windows})
    assert xs == [0, 360, 600] and ys == [0, 300]  # stride 360, the last tile flush with the edge
    record = BoxRecord("x.png", np.array([[330, 10, 370, 50], [380, 10, 420, 50]]), ["a", "b"], "x.xml")
    tiles = tile_record(record, 1000, 700, 400, 0.1, 0.5)
    first, second = tiles[0], tiles[1]  # windows (0, 0) and (360, 0)
    assert first.labels == ["a", "b"] and np.allclose(
        first.boxes[1], [380, 10, 400, 50]
    )  # clipped, half inside
    assert second.labels == ["b"] and np.allclose(second.boxes[0], [20, 10, 60, 50])  # 'a' is only 25% inside
    assert first.window == (0, 0, 400, 400)


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


def test_the_digit_benchmark_is_deterministic_and_named_semi_synthetic(tmp_path):
    first = digit_sets(tmp_path / "a", train=3, test=1)["photo"]
    second = digit_sets(tmp_path / "b", train=3, test=1)["photo"]
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["annotations"] == b["annotations"] and "SEMI-SYNTHETIC" in a["info"]["description"]
    assert np.array_equal(
        np.asarray(Image.open(first.parent / "00002.png")),
        np.asarray(Image.open(second.parent / "00002.png")),
    )


def test_every_rank_gets_every_evaluation_batch_when_padded():
    from sfda.data.samplers import GlobalBatchSampler

    for rank in (0, 1):
        plain = GlobalBatchSampler(5, 4, shuffle=False, drop_last=False, rank=rank, world_size=2)
        padded = GlobalBatchSampler(
            5, 4, shuffle=False, drop_last=False, rank=rank, world_size=2, pad_ranks=True
        )
        assert len(list(padded)) == len(padded) == 2
        assert list(plain) == ([[0, 1], [4]] if rank == 0 else [[2, 3]])
        assert list(padded) == (
            [[0, 1], [4]] if rank == 0 else [[2, 3], [4]]
        )  # a duplicate, dropped by index
