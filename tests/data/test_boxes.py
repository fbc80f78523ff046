"""The bad-input catalogue, annotation files that lie: COCO boxes, COCO keypoints and medical volumes.
Every refusal asserts the exit status (through the CLI) or the error, that the message names the file
and the field and the expected value, and that the user's files are unchanged. Crowd regions are
checked to be neither trained on nor scored. All cases run in-process on tiny real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kits.bad_input import (
    assert_refused,
    recipe,
)
from kits.coco import COCO, assert_data_refused, coco_file, turned_jpeg
from kits.detection import detection_artifact
from kits.turned import displayed, save_turned
from PIL import Image

from sfda.data import DetectionDataModule
from sfda.data.boxes import BoxRecord, check_records, read_annotations, read_coco, read_voc
from sfda.data.detection import DetectionDataset, collate_boxes

DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """One untrained detection artifact for the module (outside every user folder)."""
    return detection_artifact(tmp_path_factory.mktemp("artifact") / "detector.pt")


def lpld_recipe(root: Path, annotations: Path, source: Path) -> str:
    model = {"class_path": "sfda.methods.LPLD", "init_args": {"source": str(source)}}
    data = {
        "class_path": "sfda.data.DetectionDataModule",
        "init_args": {"train": [str(annotations)], "role": "target", "batch_size": 1, "eval_batch_size": 1},
    }
    return str(recipe(root / "lpld.yaml", model, data))


def first_box(payload: dict, bbox) -> None:
    payload["annotations"][0]["bbox"] = bbox


def add_image(payload: dict, entry: dict) -> None:
    payload["images"].append(entry)


COCO_LIES = {
    "duplicate image id": (
        lambda p: add_image(p, {"id": 1, "file_name": "b.png"}),
        ["coco.json", "images[1].id = 1 repeats images[0].id", "expected every id in 'images' to be unique"],
    ),
    "duplicate category id": (
        lambda p: p["categories"].append({"id": 3, "name": "ten"}),
        ["coco.json", "categories[10].id = 3 repeats categories[3].id", "to be unique"],
    ),
    "duplicate category name": (
        lambda p: p["categories"].append({"id": 10, "name": "3"}),
        ["coco.json", "categories[10].name = '3' repeats categories[3]", "expected distinct names"],
    ),
    "one image listed twice": (
        lambda p: add_image(p, {"id": 2, "file_name": "a.png"}),
        ["coco.json", "images[1].file_name = 'a.png' repeats images[0] (id 1)", "one entry per image"],
    ),
    "box written as x1, y1, x2, y2": (
        lambda p: first_box(p, [10, 5, 60, 40]),
        [
            "coco.json: annotations[0] (id 1): bbox [10, 5, 60, 40]",
            "COCO boxes are [x, y, width, height]",
            "x + width <= 64",
            "look like [x1, y1, x2, y2]: as COCO write [10, 5, 50, 35]",
        ],
    ),
    "box reaching past the image": (
        lambda p: first_box(p, [60, 5, 10, 10]),
        [
            "annotations[0] (id 1): bbox [60, 5, 10, 10]",
            "COCO boxes are [x, y, width, height]",
            "x + width <= 64",
        ],
    ),
    "negative width": (
        lambda p: first_box(p, [10, 5, -5, 20]),
        [
            "annotations[0] (id 1): bbox [10, 5, -5, 20]: width (bbox[2]) = -5; expected > 0",
            "COCO boxes are [x, y, width, height]",
        ],
    ),
    "zero height": (
        lambda p: first_box(p, [10, 5, 20, 0]),
        ["annotations[0] (id 1): bbox [10, 5, 20, 0]: height (bbox[3]) = 0; expected > 0"],
    ),
    "negative x": (
        lambda p: first_box(p, [-4, 5, 20, 20]),
        ["annotations[0] (id 1): bbox [-4, 5, 20, 20]", "expected 0 <= x, 0 <= y"],
    ),
    "bbox of three numbers": (
        lambda p: first_box(p, [10, 5, 20]),
        ["annotations[0] (id 1): field 'bbox' = [10, 5, 20]; expected [x, y, width, height]"],
    ),
    "a number written as a string": (
        lambda p: first_box(p, ["10", 5, 20, 20]),
        ["annotations[0] (id 1): bbox[0]: expected a number, got '10' (a string)"],
    ),
    "a NaN coordinate": (
        lambda p: first_box(p, [10, float("nan"), 20, 20]),
        ["annotations[0] (id 1): bbox[1]: expected a finite number, got nan"],
    ),
    "a boolean coordinate": (
        lambda p: first_box(p, [10, True, 20, 20]),
        ["annotations[0] (id 1): bbox[1]: expected a number, got True (a boolean)"],
    ),
    "integer category name": (
        lambda p: p["categories"].__setitem__(6, {"id": 6, "name": 6}),
        ["coco.json: categories[6].name = 6 is a number; expected a string", 'write "6"'],
    ),
    "unknown image id": (
        lambda p: p["annotations"][0].__setitem__("image_id", 9),
        ["annotations[0] (id 1): field 'image_id' = 9 names no entry of 'images'",
         "expected one of its ids [1]"],
    ),
    "unknown category id": (
        lambda p: p["annotations"][0].__setitem__("category_id", 12),
        ["annotations[0] (id 1): field 'category_id' = 12 names no entry of 'categories'",
         "expected one of its ids [0, 1, 2"],
    ),
    "iscrowd not 0 or 1": (
        lambda p: p["annotations"][0].__setitem__("iscrowd", 2),
        ["annotations[0] (id 1): field 'iscrowd' = 2; expected 0 or 1"],
    ),
    "no annotations": (
        lambda p: p.pop("annotations"),
        ["coco.json: field 'annotations' is missing; expected a COCO detection JSON", "'categories'"],
    ),
    "no categories": (
        lambda p: p.pop("categories"),
        ["coco.json: field 'categories' is missing; expected a COCO detection JSON"],
    ),
    "no images": (
        lambda p: p.pop("images"),
        ["coco.json: field 'images' is missing; expected a COCO detection JSON"],
    ),
    "annotation without category": (
        lambda p: p["annotations"][0].pop("category_id"),
        ["coco.json: annotations[0]: field 'category_id' is missing; expected a COCO detection JSON"],
    ),
    "image without file name": (
        lambda p: p["images"][0].pop("file_name"),
        ["coco.json: images[0]: field 'file_name' is missing"],
    ),
    "declared height written as a string": (
        lambda p: p["images"][0].update(height="48"),
        ["coco.json: images entry id 1: field 'height': expected a number, got '48' (a string)"],
    ),
    "declared size differs from the image": (
        lambda p: p["images"][0].update(width=640, height=480),
        ["coco.json: image 'a.png': the file declares width x height 640x480", "the image is 64x48 pixels"],
    ),
    "one image listed twice under two spellings": (
        lambda p: (add_image(p, {"id": 2, "file_name": "./a.png"}),
                   p["annotations"].append({"id": 2, "image_id": 2, "category_id": 4, "bbox": [1, 1, 5, 5]})),
        ["coco.json: images[1].file_name = './a.png' repeats images[0] (id 1): 'a.png', the same file",
         "expected one entry per image"],
    ),
    "image_id written as a list": (
        lambda p: p["annotations"][0].__setitem__("image_id", [1]),
        ["coco.json: annotations[0] (id 1): field 'image_id' = [1] (a list)",
         "expected an integer or string id"],
    ),
    "category_id written as an object": (
        lambda p: p["annotations"][0].__setitem__("category_id", {"id": 3}),
        ["annotations[0] (id 1): field 'category_id' = {'id': 3}", "expected an integer or string id"],
    ),
    "category_id written as a boolean": (
        lambda p: p["annotations"][0].__setitem__("category_id", True),
        ["annotations[0] (id 1): field 'category_id' = True (a boolean); expected an integer or string id"],
    ),
    "iscrowd written as a boolean": (
        lambda p: p["annotations"][0].__setitem__("iscrowd", True),
        ["annotations[0] (id 1): field 'iscrowd' = True; expected 0 or 1"],
    ),
    "fractional declared width": (
        lambda p: p["images"][0].update(width=64.5),
        ["coco.json: images entry id 1: field 'width': expected a whole number of pixels >= 0, got 64.5"],
    ),
    "declared width null beside a height": (
        lambda p: p["images"][0].update(width=None),
        ["coco.json: images entry id 1: field 'width': expected a number, got None (a null)"],
    ),
    "empty category name": (
        lambda p: p["categories"][0].update(name=" "),
        ["coco.json: categories[0].name = ' ' is empty; expected a name"],
    ),
    "image file name not a string": (
        lambda p: p["images"][0].update(file_name=5),
        ["coco.json: images[0].file_name = 5; expected the image's file name (a non-empty string)"],
    ),
}


# through the CLI (exit status, one line, nothing written): one lie of each kind; the datamodule test below
# runs every lie through the same checks
COCO_LIES_THROUGH_THE_CLI = ["duplicate image id", "box written as x1, y1, x2, y2", "integer category name"]


@pytest.mark.parametrize("lie", COCO_LIES_THROUGH_THE_CLI)
def test_a_coco_file_that_lies_is_refused_through_the_cli(user, detector, lie):
    change, needles = COCO_LIES[lie]
    annotations = coco_file(user, change)
    assert_refused(["fit", "--config", lpld_recipe(user, annotations, detector)], user, *needles)


@pytest.mark.parametrize("lie", list(COCO_LIES), ids=list(COCO_LIES))
def test_a_coco_file_that_lies_is_refused_by_the_detection_data(user, lie):
    change, needles = COCO_LIES[lie]
    annotations = coco_file(user, change)
    data = DetectionDataModule(train=[str(annotations)], role="target", class_names=DIGITS)
    assert_data_refused(data, user, *needles)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("[]", ["coco.json: expected a JSON object with 'images'", "got a list"]),
        ('{"images": [], "annotations": [], "categories": []', ["coco.json: not readable JSON"]),
        (
            json.dumps({**COCO, "annotations": {"0": 1}}),
            ["coco.json: field 'annotations' must be a list", "got a object"],
        ),
    ],
)
def test_a_file_that_is_not_coco_is_refused_naming_the_shape(user, detector, text, needles):
    annotations = coco_file(user, text=text)
    assert_refused(["fit", "--config", lpld_recipe(user, annotations, detector)], user, *needles)


# --- crowd regions: kept as ignored boxes, never trained on, never scored ----
def crowd_coco(root: Path) -> Path:
    """a.png with an ordinary box of class 3 and a crowd region of class 3."""
    def change(payload):
        payload["annotations"].append(
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [36, 10, 20, 30], "iscrowd": 1}
        )
    return coco_file(root, change)


def test_crowd_regions_are_never_training_targets_and_are_flagged_for_evaluation(user):
    records = read_coco(str(crowd_coco(user)))
    assert records[0].crowd.tolist() == [False, True]
    training = DetectionDataset(records, DIGITS, 32, train=True)[0]
    evaluation = collate_boxes([DetectionDataset(records, DIGITS, 32)[0]])
    assert len(training["boxes"]) == 1 and training["ignored"].tolist() == [0]
    assert evaluation["ignored"][0].tolist() == [0, 1]
    assert evaluation["labels"][0].tolist() == [3, 3]


def test_voc_difficult_boxes_are_ignored_like_crowd_regions(user):
    objects = "".join(
        f"<object><name>3</name><difficult>{d}</difficult><bndbox><xmin>{x}</xmin><ymin>5</ymin>"
        f"<xmax>{x + 20}</xmax><ymax>25</ymax></bndbox></object>"
        for d, x in ((0, 2), (1, 30))
    )
    (user / "a.xml").write_text(f"<annotation><filename>a.png</filename>{objects}</annotation>")
    records = read_voc(str(user / "a.xml"))
    assert records[0].ignored.tolist() == [False, True]
    assert DetectionDataset(records, DIGITS, 32, train=True)[0]["labels"].tolist() == [3]
    assert DetectionDataset(records, DIGITS, 32)[0]["ignored"].tolist() == [0, 1]


# --- round 4: what the files say is read as the files mean it, or refused by name ----


def voc_file(root: Path, size: str = "", difficult: str = "0", name: str = "3", image: str = "a.png") -> Path:
    path = root / "a.xml"
    path.write_text(
        f"<annotation><filename>{image}</filename>{size}<object><name>{name}</name>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>2</xmin><ymin>5</ymin><xmax>22</xmax>"
        "<ymax>25</ymax></bndbox></object></annotation>"
    )
    return path


def voc_size(width, height) -> str:
    return f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        ({"size": voc_size(640, 480)},
         ["a.xml: image 'a.png': the file declares width x height 640x480", "the image is 64x48 pixels"]),
        ({"size": voc_size(64, 48), "image": "turned.jpg"},
         ["a.xml: image 'turned.jpg': the file declares width x height 64x48", "the image is 48x64 pixels"]),
        ({"size": voc_size(64.5, 48)}, ["a.xml: field size/width: expected a whole number of pixels"]),
        ({"difficult": "yes"}, ["a.xml: object 0 ('3'), field 'difficult' = 'yes'; expected 0 or 1"]),
        ({"name": " "}, ["a.xml: object 0 (' '), field 'name' = '' is empty; expected a name"]),
    ],
    ids=["size of another image", "stored size of an EXIF-turned image", "fractional size", "difficult yes",
         "empty class name"],
)
def test_a_voc_file_that_lies_is_refused_by_the_detection_data(user, kwargs, needles):
    turned_jpeg(user / "turned.jpg")
    annotations = voc_file(user, **kwargs)
    assert_data_refused(
        DetectionDataModule(train=[str(annotations)], role="target", class_names=DIGITS), user, *needles
    )


def test_a_voc_size_that_matches_or_is_left_unknown_is_accepted(user):
    for size in (voc_size(64, 48), voc_size(0, 0), ""):
        record = read_voc(str(voc_file(user, size=size)))[0]
        DetectionDataModule(train=[str(user / "a.xml")], role="target", class_names=DIGITS).setup()
        assert record.declared in ((64, 48), None)


def test_a_csv_row_with_an_empty_label_is_refused_naming_the_line(user):
    table = user / "boxes.csv"
    table.write_text("image_path,xmin,ymin,xmax,ymax,label\na.png,10,5,30,25,3\na.png,1,1,5,5,\n")
    assert_data_refused(
        DetectionDataModule(train=[str(table)], role="source"),
        user,
        "boxes.csv: line 3, field 'label' = '' is empty; expected a name",
    )


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


# --- detection: boxes, labels, images and artifacts of the wrong task, through the CLI ----
def detection_recipe(root, boxes_csv: Path, source: Path) -> str:
    model = {"class_path": "sfda.methods.LPLD", "init_args": {"source": str(source)}}
    data = {
        "class_path": "sfda.data.DetectionDataModule",
        "init_args": {"train": [str(boxes_csv)], "role": "target", "batch_size": 1, "eval_batch_size": 1},
    }
    return str(recipe(root / "lpld.yaml", model, data))


@pytest.mark.parametrize(
    "row, needles",
    [
        ("a.png,10,5,90,25,0", ["boxes.csv: image 'a.png', box 0", "outside the image of 64x48 pixels"]),
        (
            "a.png,30,5,30,25,0",
            ["boxes.csv: image 'a.png', box 0", "field 'xmax' must be greater than 'xmin'"],
        ),
        (
            "a.png,10,5,30,25,cat",
            ["boxes.csv: image 'a.png', box 0", "field 'label' = 'cat' is not one of class_names"],
        ),
        ("gone.png,10,5,30,25,0", ["boxes.csv: names image", "gone.png', which does not exist"]),
    ],
)
def test_a_bad_box_file_is_refused_through_the_cli_naming_file_and_field(tmp_path, monkeypatch, row, needles):
    from kits.detection import detection_artifact

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_text(f"image_path,xmin,ymin,xmax,ymax,label\n{row}\n")
    artifact = detection_artifact(tmp_path / "detector.pt")
    assert_refused(
        ["fit", "--config", detection_recipe(tmp_path, tmp_path / "boxes.csv", artifact)], tmp_path, *needles
    )


def test_boxes_are_checked_against_the_displayed_size_of_a_turned_photo(tmp_path):
    save_turned(tmp_path / "portrait.jpg", displayed(60, 30), 6)  # stored 30 high, 60 wide
    image = str(tmp_path / "portrait.jpg")
    inside = BoxRecord(image, np.array([[2.0, 40.0, 20.0, 58.0]]), ["0"], "boxes.csv")
    check_records([inside], ["0"])  # fits the displayed 30x60, not the stored 60x30
    outside = BoxRecord(image, np.array([[2.0, 2.0, 50.0, 20.0]]), ["0"], "boxes.csv")
    with pytest.raises(ValueError) as err:
        check_records([outside], ["0"])
    assert "boxes.csv: image" in str(err.value) and "outside the image of 30x60 pixels" in str(err.value)
