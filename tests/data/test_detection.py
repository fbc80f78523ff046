"""The bad-input catalogue, images as the file says (issue 27): EXIF orientation in every reader
(classification, detection boxes and tiles, pose joints), transparency, skipped files and nested folders,
and list files or images given in the wrong place. Each case asserts the exit status or the error, that
the message names the file or field and the expected value, and that the user's files are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kits.turned import displayed, save_turned
from PIL import Image

from sfda.data import DetectionDataModule
from sfda.data.detection import DetectionDataset, collate_boxes
from sfda.data.transforms import InputSpec


def box_csv(root: Path, image: str, box: tuple[int, int, int, int]) -> Path:
    path = root / "boxes.csv"
    path.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + f"{image}," + ",".join(map(str, box)) + ",0\n")
    return path


def test_detection_crops_and_tiles_come_from_the_displayed_image(tmp_path):
    picture = displayed(60, 30)
    save_turned(tmp_path / "portrait.png", picture, 8)
    csv = box_csv(tmp_path, "portrait.png", (2, 40, 20, 58))
    spec = InputSpec(size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    module = DetectionDataModule([str(csv)], role="source", class_names=["0"], input=spec, tile_size=30,
                                 tile_overlap=0.0)
    module.setup()
    tiles = module.splits["train"] + module.splits["val"]
    assert sorted(t.window for t in tiles) == [(0, 0, 30, 30), (0, 30, 30, 60)]
    dataset = DetectionDataset(tiles, ["0"], 32)
    assert np.array_equal(dataset.load(0), picture)


def test_a_detection_image_folder_announces_skipped_files_and_folders(tmp_path, capsys):
    (tmp_path / "extra" / "old").mkdir(parents=True)
    Image.fromarray(displayed()).save(tmp_path / "extra" / "a.png")
    (tmp_path / "extra" / "readme.md").write_text("x")
    module = DetectionDataModule([str(tmp_path / "extra")], class_names=["0"])
    module.setup()
    assert len(module.splits["train"]) == 1
    err = capsys.readouterr().err
    assert "skipped 2 entries" in err and "or are sub-folders" in err and "'old'" in err


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


def labelled_csv(root: Path, rows: list[tuple[str, str]]) -> Path:
    """A CSV of boxes ``(image, label)`` (each box (2, 2, 20, 20)) in ``root``."""
    path = root / "sites.csv"
    lines = "".join(f"{image},2,2,20,20,{label}\n" for image, label in rows)
    path.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + lines)
    return path


def test_a_label_map_renames_and_drops_labels_before_the_class_names_are_checked(user):
    csv = labelled_csv(user, [("a.png", "Dead"), ("a.png", "Alive"), ("b.png", "Stump"), ("b.png", "Alive")])
    spec = InputSpec(size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    module = DetectionDataModule([str(csv)], role="target", class_names=["tree"], input=spec,
                                 label_map={"Dead": "tree", "Alive": "tree", "Stump": None})
    module.setup()
    records = {Path(r.image).name: r for r in module.splits["train"]}
    assert records["a.png"].labels == ["tree", "tree"] and records["b.png"].labels == ["tree"]
    assert len(records["b.png"].boxes) == 1  # the Stump box is dropped
    source = DetectionDataModule([str(csv)], role="source", input=spec, label_map={"Stump": None})
    source.setup()
    assert source.class_names == ["Alive", "Dead"]


def test_label_map_refusals_and_the_warning_name_the_field(user):
    csv = labelled_csv(user, [("a.png", "Dead")])
    with pytest.raises(ValueError, match=r"label_map.Dead = 'bush' is not one of class_names \['tree'\]"):
        DetectionDataModule([str(csv)], class_names=["tree"], label_map={"Dead": "bush"}).setup()
    with pytest.raises(ValueError, match="data.label_map: expected a mapping"):
        DetectionDataModule([str(csv)], class_names=["tree"], label_map=["Dead", "tree"])
    with pytest.raises(ValueError, match="data.label_map.Dead = ''"):
        DetectionDataModule([str(csv)], class_names=["tree"], label_map={"Dead": ""})
    with pytest.raises(ValueError, match=r"'Dead' is not one of class_names \['tree'\] \(rename or drop"):
        DetectionDataModule([str(csv)], class_names=["tree"]).setup()
    with pytest.warns(UserWarning, match=r"data.label_map: \['Alive'\] found in no annotation"):
        DetectionDataModule([str(csv)], class_names=["tree"], label_map={"Dead": "tree", "Alive": "tree"}
                            ).setup()

def test_target_training_items_carry_their_boxes_for_reporting_only(tmp_path):
    Image.fromarray(displayed(32, 32)).save(tmp_path / "a.png")
    csv = box_csv(tmp_path, "a.png", (2, 4, 20, 30))
    spec = InputSpec(size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    module = DetectionDataModule([str(csv)], role="target", class_names=["0"], input=spec)
    hidden, shown = module.dataset("train", train=True), module.dataset("val")
    item = hidden[(0, 7)]
    assert len(item["boxes"]) == len(item["labels"]) == len(item["ignored"]) == 0 and not item["labelled"]
    flipped = [32 - 20, 4, 32 - 2, 30]  # the weak view's geometry, drawn by the seed, applies to them
    assert item["report_boxes"].tolist() in ([[2, 4, 20, 30]], [flipped])
    assert "report_boxes" not in shown[0] and shown[0]["boxes"].tolist() == [[2, 4, 20, 30]]
    batch = collate_boxes([item, item])
    assert len(batch["report_boxes"]) == 2 and "report_boxes" not in collate_boxes([shown[0]])
