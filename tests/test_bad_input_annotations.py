"""The bad-input catalogue, annotation files that lie: COCO boxes, COCO keypoints and medical volumes.
Every refusal asserts the exit status (through the CLI) or the error, that the message names the file
and the field and the expected value, and that the user's files are unchanged. Crowd regions are
checked to be neither trained on nor scored. All cases run in-process on tiny real files."""

from __future__ import annotations

import copy
import json
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from bad_input_kit import assert_refused, recipe, snapshot
from detection_kit import detection_artifact
from PIL import Image

from sfda.active.annotators import read_labels_file
from sfda.data import DatalistError, DetectionDataModule, PoseDataModule, VolumeSpec
from sfda.data.benchmarks.pose_figures import generate
from sfda.data.boxes import read_coco, read_csv, read_voc
from sfda.data.detection import DetectionDataset, collate_boxes
from sfda.data.keypoints import read_people
from sfda.data.volume_files import Geometry
from sfda.data.volume_writing import process_locale_kept, write_volume
from sfda.data.volumes import load_volume, read_datalist
from sfda.metrics.detection import detection_scores
from sfda.tasks.detection import DetectionTask

DIGITS = [str(d) for d in range(10)]
COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 20], "iscrowd": 0}],
    "categories": [{"id": d, "name": str(d)} for d in range(10)],
}


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """One untrained detection artifact for the module (outside every user folder)."""
    return detection_artifact(tmp_path_factory.mktemp("artifact") / "detector.pt")


@pytest.fixture()
def user(tmp_path, monkeypatch) -> Path:
    """A user's folder (also the cwd) with the 64x48 image a.png and a second image b.png."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SFDA_RUN_VERSION", raising=False)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "b.png")
    return tmp_path


def coco_file(root: Path, change=None, text: str | None = None) -> Path:
    """``root/coco.json``: the valid COCO above, changed in place by ``change(payload)``, or ``text``."""
    payload = copy.deepcopy(COCO)
    if change is not None:
        change(payload)
    path = root / "coco.json"
    path.write_text(text if text is not None else json.dumps(payload))
    return path


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


def assert_data_refused(datamodule, root: Path, *needles: str) -> str:
    """Set ``datamodule`` up as a run does (its checks are those the CLI reaches, in 1/50 of the time);
    assert it refuses with every needle in the message and that no file under ``root`` changed."""
    before = snapshot(root)
    with pytest.raises(ValueError) as refused:
        datamodule.setup()
    for needle in needles:
        assert needle in str(refused.value), f"{needle!r} not in: {refused.value}"
    assert snapshot(root) == before, "a refused file was changed"
    return str(refused.value)


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


def test_a_detection_on_a_crowd_region_is_neither_a_hit_nor_a_false_positive():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])  # an ordinary box, then a crowd region
    ordinary = {"boxes": boxes, "labels": torch.tensor([3, 3])}
    crowd = {**ordinary, "iscrowd": torch.tensor([0, 1])}
    both = {"boxes": boxes.flip(0), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([3, 3])}
    real_only = {"boxes": boxes[:1], "scores": torch.tensor([0.8]), "labels": torch.tensor([3])}
    # the crowd region is not a reference to find ...
    assert detection_scores([real_only], [ordinary], DIGITS)["ap50"] == pytest.approx(0.5)
    scores = detection_scores([real_only], [crowd], DIGITS)
    assert scores["ap50"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)
    # ... and a detection on it, even the highest scored, is not a false positive
    scores = detection_scores([both], [crowd], DIGITS)
    assert scores["ap50"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)


# --- COCO keypoints: a person file that lies ----
@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, Path]:
    """Four generated pose figures and an untrained pose artifact (outside every user folder)."""
    from test_pose_methods import pose_artifact

    root = tmp_path_factory.mktemp("figures")
    return {"people": generate(root, "flat", "train", count=4), "artifact": pose_artifact(root / "pose.pt")}


def people_file(figures: dict, root: Path, change) -> Path:
    """The figures' keypoints file and images copied into ``root``, the file changed by ``change``."""
    source = figures["people"]
    payload = json.loads(source.read_text())
    for image in payload["images"]:
        shutil.copy(source.parent / image["file_name"], root / image["file_name"])
    change(payload)
    path = root / "people.json"
    path.write_text(json.dumps(payload))
    return path


def pose_recipe(root: Path, people: Path, artifact: Path) -> str:
    model = {"class_path": "sfda.methods.PoseSFDA", "init_args": {"source": str(artifact)}}
    data = {
        "class_path": "sfda.data.PoseDataModule",
        "init_args": {"train": [str(people)], "role": "target", "batch_size": 2, "eval_batch_size": 2},
    }
    return str(recipe(root / "pose.yaml", model, data))


def joint_value(index: int, value):
    """A change that writes ``value`` at ``keypoints[index]`` of annotation 1."""
    return lambda p: p["annotations"][1]["keypoints"].__setitem__(index, value)


POSE_LIES = {
    "visibility 3": (
        joint_value(2, 3),
        ["people.json: annotation 1: keypoints[2] (joint 'r_ankle', v) = 3", "expected a COCO visibility 0"],
    ),
    "visibility -1": (
        joint_value(5, -1),
        ["annotation 1: keypoints[5] (joint 'r_knee', v) = -1", "or 2 (visible)"],
    ),
    "NaN x": (
        joint_value(0, float("nan")),
        ["people.json: annotation 1: keypoints[0] (joint 'r_ankle', x): expected a finite number, got nan"],
    ),
    "infinite y": (
        joint_value(4, float("inf")),
        ["annotation 1: keypoints[4] (joint 'r_knee', y): expected a finite number, got inf"],
    ),
    "a coordinate written as a string": (
        joint_value(3, "12"),
        ["annotation 1: keypoints[3] (joint 'r_knee', x): expected a number, got '12' (a string)"],
    ),
    "no bbox": (
        lambda p: p["annotations"][1].pop("bbox"),
        ["people.json: annotation 1: field 'bbox' = None; expected [x, y, width, height]"],
    ),
    "a NaN bbox": (
        lambda p: p["annotations"][1]["bbox"].__setitem__(2, float("nan")),
        ["people.json: annotation 1: bbox[2]: expected a finite number, got nan"],
    ),
    "zero-width bbox": (
        lambda p: p["annotations"][1]["bbox"].__setitem__(2, 0),
        ["people.json: annotation 1: bbox [", "width (bbox[2]) = 0; expected > 0", "[x, y, width, height]"],
    ),
    "one joint too few": (
        lambda p: p["annotations"][1].__setitem__("keypoints", p["annotations"][1]["keypoints"][:-3]),
        ["people.json: annotation 1: keypoints holds 15 joints (45 numbers)", "(expected 48 numbers"],
    ),
    "no keypoints": (
        lambda p: p["annotations"][1].pop("keypoints"),
        ["people.json: annotation 1: keypoints holds 0 joints", "(expected 48 numbers"],
    ),
    "duplicate image id": (
        lambda p: p["images"][1].__setitem__("id", 0),
        ["people.json: images[1].id = 0 repeats images[0].id", "to be unique"],
    ),
    "unknown image id": (
        lambda p: p["annotations"][1].__setitem__("image_id", 99),
        ["people.json: annotation 1: field 'image_id' = 99 names no entry of 'images'",
         "expected one of its ids [0, 1, 2, 3]"],
    ),
    "no annotations": (
        lambda p: p.pop("annotations"),
        ["people.json: field 'annotations' is missing; expected a COCO keypoints JSON"],
    ),
    "no images": (
        lambda p: p.pop("images"),
        ["people.json: field 'images' is missing; expected a COCO keypoints JSON"],
    ),
    "repeated annotation id": (
        lambda p: p["annotations"][2].__setitem__("id", 1),
        ["people.json: annotations[2].id = 1 repeats annotations[1].id", "expected unique annotation ids"],
    ),
    "unknown category id": (
        lambda p: p["annotations"][1].__setitem__("category_id", 7),
        ["people.json: annotation 1: field 'category_id' = 7 names no entry of 'categories'; expected one of "
         "its ids [1]"],
    ),
    "iscrowd not 0 or 1": (
        lambda p: p["annotations"][1].__setitem__("iscrowd", "yes"),
        ["people.json: annotation 1: field 'iscrowd' = 'yes'; expected 0 or 1"],
    ),
    "iscrowd written as a boolean": (
        lambda p: p["annotations"][1].__setitem__("iscrowd", True),
        ["people.json: annotation 1: field 'iscrowd' = True; expected 0 or 1"],
    ),
    "a joint in two flip pairs": (
        lambda p: p["categories"][0]["flip_pairs"].append([0, 1]),
        ["people.json: category 1: flip_pairs[6]: joint 'r_ankle' is also in pair 0 [0, 5]",
         "expected each joint in at most one pair"],
    ),
    "flip pair naming an unknown joint": (
        lambda p: p["categories"][0].update(flip_pairs=[["r_ankle", "l_ankel"]]),
        ["people.json: category 1: flip_pairs[0] = ['r_ankle', 'l_ankel']: 'l_ankel' is not a joint of",
         "each a joint name or an id in 0..15"],
    ),
    "a 0-based skeleton": (
        lambda p: p["categories"][0]["skeleton"].__setitem__(0, [0, 1]),
        ["people.json: category 1: skeleton[0] = [0, 1]: 0 is not a joint of",
         "an id in 1..16 (COCO skeletons count joints from 1)"],
    ),
    "a skeleton id past the last joint": (
        lambda p: p["categories"][0]["skeleton"].__setitem__(0, [1, 17]),
        ["people.json: category 1: skeleton[0] = [1, 17]: 17 is not a joint of"],
    ),
    "repeated joint names": (
        lambda p: p["categories"][0]["keypoints"].__setitem__(5, "r_ankle"),
        ["people.json: category 1: keypoints[5] = 'r_ankle' repeats keypoints[0]",
         "expected distinct joint names"],
    ),
    "an empty joint name": (
        lambda p: p["categories"][0]["keypoints"].__setitem__(3, ""),
        ["people.json: category 1: keypoints[3] = '' is empty; expected a name"],
    ),
    "categories written as names": (
        lambda p: p.update(categories=["person"]),
        ["people.json: categories[0] = 'person' (a string); expected an object"],
    ),
    "bbox entirely outside the image": (
        lambda p: p["annotations"][1].update(bbox=[500, 500, 20, 20]),
        ["people.json: annotation 1 (00001.png#1): bbox [500, 500, 20, 20] lies entirely outside its 128x128 "
         "image", "expected a box [x, y, width, height] that overlaps the image"],
    ),
    "keypoint outside an image of unstated size": (
        lambda p: (p["images"][1].pop("width"), p["images"][1].pop("height"),
                   p["annotations"][1]["keypoints"].__setitem__(0, 5000),
                   p["annotations"][1]["keypoints"].__setitem__(2, 2)),
        ["people.json: annotation 1 (00001.png#1): keypoint 'r_ankle' at (5000,",
         "lies outside its 128x128 image; expected 0 <= x < 128"],
    ),
    "fractional width": (
        lambda p: p["images"][1].update(width=128.9),
        ["people.json: images entry id 1: field 'width': expected a whole number of pixels >= 0, got 128.9"],
    ),
    "width null beside a height": (
        lambda p: p["images"][1].update(width=None),
        ["people.json: images entry id 1: field 'width': expected a number, got None (a null)"],
    ),
    "image_id written as a list": (
        lambda p: p["annotations"][1].__setitem__("image_id", [1]),
        ["people.json: annotation 1: field 'image_id' = [1] (a list); expected an integer or string id"],
    ),
    "keypoints written as a list of triples": (
        lambda p: p["annotations"][1].update(
            keypoints=[p["annotations"][1]["keypoints"][i : i + 3] for i in range(0, 48, 3)]
        ),
        ["people.json: annotation 1: keypoints is a list of 16 lists",
         "expected one flat list of numbers x1, y1, v1, x2, y2, v2, ...",
         "(48 numbers for the category's 16 joints"],
    ),
}


@pytest.mark.parametrize("lie", ["visibility 3", "no bbox"])
def test_a_keypoints_file_that_lies_is_refused_through_the_cli(user, figures, lie):
    change, needles = POSE_LIES[lie]
    people = people_file(figures, user, change)
    assert_refused(["fit", "--config", pose_recipe(user, people, figures["artifact"])], user, *needles)


@pytest.mark.parametrize("lie", list(POSE_LIES), ids=list(POSE_LIES))
def test_a_keypoints_file_that_lies_is_refused_by_the_pose_data(user, figures, lie):
    change, needles = POSE_LIES[lie]
    people = people_file(figures, user, change)
    assert_data_refused(PoseDataModule(train=[str(people)], role="target"), user, *needles)


def test_nan_keypoints_are_refused_when_read_not_reported_as_a_learning_rate_problem(user, figures):
    people = people_file(figures, user, joint_value(1, float("nan")))
    model = {
        "class_path": "sfda.methods.PoseSourceTraining",
        "init_args": {"backbone": "resnet18", "deconv_channels": 16, "artifact": str(user / "source.pt")},
    }
    data = {
        "class_path": "sfda.data.PoseDataModule",
        "init_args": {
            "train": [str(people)],
            "role": "source",
            "input": {"size": 64, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "batch_size": 2,
        },
    }
    text = assert_refused(
        ["fit", "--config", str(recipe(user / "source.yaml", model, data))],
        user,
        "people.json: annotation 1: keypoints[1] (joint 'r_ankle', y): expected a finite number, got nan",
    )
    assert "learning rate" not in text


# --- volumes: DICOM series, NIfTI headers and voxels that lie ----
def small_geometry(root: Path, shape=(16, 12, 8)) -> Geometry:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-8.0, 4.0, 10.0)
    return Geometry(root / "none.nii.gz", "synthetic", shape, affine)


def scan(shape=(16, 12, 8), seed: int = 0) -> np.ndarray:
    """An image with varying intensities."""
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(np.int16)


def brain_mask(shape=(16, 12, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.int16)
    mask[4:12, 3:9, 2:6] = 1
    return mask


def segmentation_recipe(root: Path, image: Path, label: Path) -> str:
    """A source-training recipe on one datalist entry (image, label) in ``root``."""
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"id": "case", "image": str(image), "label": str(label)}]}))
    model = {
        "class_path": "sfda.methods.SegmentationSourceTraining",
        "init_args": {"artifact": str(root / "source.pt")},
    }
    data = {
        "class_path": "sfda.data.SegmentationDataModule",
        "init_args": {
            "datalist": str(datalist),
            "class_names": ["background", "brain"],
            "role": "source",
            "batch_size": 2,
            "input": {"mode": "2d", "roi": [16, 16], "spacing": [1.0, 1.0, 2.0]},
        },
    }
    return str(recipe(root / "source.yaml", model, data))


def retag(folder: Path, slices: range, tag: str, value: str) -> None:
    """Write ``value`` into DICOM ``tag`` of slices ``slices`` of ``folder`` (UIDs kept)."""
    for k in slices:
        path = folder / f"slice_{k:04d}.dcm"
        image = sitk.ReadImage(str(path))
        image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(path))
        with process_locale_kept():
            writer.Execute(image)


def mixed_series(root: Path, tag: str, value: str) -> tuple[Path, Path]:
    """A DICOM series whose second half has ``tag`` = ``value``, and its NIfTI mask."""
    geometry = small_geometry(root)
    folder = write_volume(scan(), geometry, root / "series")
    retag(folder, range(4, 8), tag, value)
    return folder, write_volume(brain_mask(), geometry, root / "mask.nii.gz")


@pytest.mark.parametrize(
    "tag, value, needle",
    [
        ("0008|0060", "PT", "differ in Modality (0008,0060): 'OT' in slice_0001.dcm, 'PT' in slice_0004.dcm"),
        ("0018|0086", "2", "in EchoNumbers (0018,0086): absent in slice_0001.dcm, '2' in slice_0004.dcm"),
        ("0020|0011", "77", "differ in SeriesNumber (0020,0011)"),
        ("0008|103e", "T2 FLAIR", "differ in SeriesDescription (0008,103E)"),
    ],
)
def test_a_dicom_series_mixing_acquisitions_under_one_uid_is_refused_naming_the_tag(user, tag, value, needle):
    folder, mask = mixed_series(user, tag, value)
    assert_refused(
        ["fit", "--config", segmentation_recipe(user, folder, mask)],
        user,
        "series: one SeriesInstanceUID holds slices that",
        needle,
        "expected every slice of one volume to share it",
    )


def nifti_with_pixdim(path: Path, data: np.ndarray, index: int, value: float) -> Path:
    """A NIfTI file whose header says ``pixdim[index] = value`` (patched after nibabel writes it)."""
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    raw = bytearray(path.read_bytes())
    offset = 76 + 4 * index  # pixdim: 8 float32 at byte 76 of the NIfTI-1 header
    raw[offset : offset + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("index, value, shown", [(3, 0.0, "0"), (1, -1.0, "-1"), (2, float("nan"), "nan")])
def test_a_nifti_with_a_voxel_size_that_is_not_positive_is_refused_naming_pixdim(user, index, value, shown):
    image = nifti_with_pixdim(user / "scan.nii", scan(), index, value)
    mask = nifti_with_pixdim(user / "mask.nii", brain_mask(), 3, 2.0)
    assert_refused(
        ["fit", "--config", segmentation_recipe(user, image, mask)],
        user,
        f"scan.nii: header field pixdim[{index}] = {shown}",
        "expected positive voxel sizes in mm",
    )


@pytest.mark.parametrize(
    "name, voxels, needle",
    [
        ("blank.nii.gz", np.zeros((16, 12, 8), np.int16), "blank.nii.gz: every voxel is 0 (a constant"),
        ("grey.nrrd", np.full((16, 12, 8), 5, np.int16), "grey.nrrd: every voxel is 5 (a constant image)"),
    ],
)
def test_a_constant_image_is_refused_naming_the_file(user, name, voxels, needle):
    geometry = small_geometry(user)
    image = write_volume(voxels, geometry, user / name)
    mask = write_volume(brain_mask(), geometry, user / "mask.nii.gz")
    recipe_file = segmentation_recipe(user, image, mask)
    assert_refused(["fit", "--config", recipe_file], user, needle, "expected an image with varying")


def test_a_blank_channel_of_a_multichannel_image_is_refused_naming_the_channel(user):
    two = np.stack([scan(), np.zeros((16, 12, 8), np.int16)], axis=-1)
    nib.save(nib.Nifti1Image(two, np.diag([1.0, 1.0, 2.0, 1.0])), str(user / "two.nii.gz"))
    with pytest.raises(DatalistError, match=r"two.nii.gz: channel 1: every voxel is 0 \(a constant image\)"):
        load_volume({"id": "two", "image": user / "two.nii.gz"}, VolumeSpec(), 2, use_label=False)


def test_a_mask_of_another_shape_than_its_image_is_refused_naming_both(user):
    geometry = small_geometry(user)
    image = write_volume(scan(), geometry, user / "scan.nii.gz")
    smaller = small_geometry(user, shape=(16, 12, 6))
    mask = write_volume(brain_mask((16, 12, 6)), smaller, user / "mask.nii.gz")
    assert_refused(
        ["fit", "--config", segmentation_recipe(user, image, mask)],
        user,
        "mask.nii.gz: the label's voxel grid differs from its image",
        "grid 16x12x6",
        "expected the same grid",
    )


def test_gathered_evaluation_rows_pass_the_crowd_flags_to_the_scores():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    rows = {
        "boxes": [boxes[1:]],
        "scores": [torch.tensor([0.9])],
        "labels": [torch.tensor([3])],
        "ref_boxes": [boxes],
        "ref_labels": [torch.tensor([3, 3])],
        "ref_ignored": [torch.tensor([0, 1])],
        "labelled": torch.tensor([1]),
    }
    task = DetectionTask(DIGITS, None)
    assert task.score_rows(None, rows, "target")["target/ap50"] == pytest.approx(0.0)
    rows["ref_ignored"] = [torch.tensor([1, 0])]
    assert task.score_rows(None, rows, "target")["target/ap50"] == pytest.approx(1.0)


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


def test_annotation_files_saved_as_utf16_with_a_bom_are_read(user):
    """Every text file a user hands in goes through one reader: a spreadsheet's or Windows' UTF-16 with a
    byte-order mark reads as the same annotations as UTF-8."""
    utf8 = read_coco(str(coco_file(user)))
    wide = user / "wide.json"
    wide.write_text(json.dumps(COCO), encoding="utf-16")
    assert [r.boxes.tolist() for r in read_coco(str(wide))] == [r.boxes.tolist() for r in utf8]
    table = user / "boxes.csv"
    table.write_text("image_path,xmin,ymin,xmax,ymax,label\na.png,10,5,30,25,3\n", encoding="utf-16")
    assert read_csv(str(table))[0].boxes.tolist() == [[10.0, 5.0, 30.0, 25.0]]
    labels = user / "labels.csv"
    labels.write_text("index,label\n0,7\n", encoding="utf-16")
    assert read_labels_file(labels, {0: "a.png"}, DIGITS) == {0: 7}


@pytest.mark.parametrize("reader", ["coco", "csv", "keypoints", "datalist", "labels"])
def test_annotation_files_in_another_encoding_are_refused_naming_the_file(user, reader):
    """UTF-16 without a byte-order mark (NUL bytes) is named as such, with what belongs there, before any
    parser sees it (a raw UnicodeDecodeError or JSON error before)."""
    path = user / f"wide.{'csv' if reader in ('csv', 'labels') else 'json'}"
    path.write_bytes(json.dumps(COCO).encode("utf-16-le"))
    before = path.read_bytes()
    read = {"coco": lambda: read_coco(str(path)), "csv": lambda: read_csv(str(path)),
            "keypoints": lambda: read_people(str(path)), "datalist": lambda: read_datalist(path, "training"),
            "labels": lambda: read_labels_file(path, {0: "a.png"}, DIGITS)}[reader]
    with pytest.raises(ValueError) as refused:
        read()
    message = str(refused.value)
    assert str(path) in message and "NUL bytes" in message and "expected" in message
    assert {"coco": "COCO", "csv": "image_path,xmin", "keypoints": "keypoints JSON", "datalist": "datalist",
            "labels": "index,label"}[reader] in message
    assert path.read_bytes() == before


def test_a_keypoints_file_holding_a_json_list_is_refused_naming_the_shape(user):
    path = user / "people.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"people.json: holds a JSON list; expected a COCO keypoints JSON"):
        read_people(str(path))


# --- round 4: what the files say is read as the files mean it, or refused by name ----
def turned_jpeg(path: Path) -> Path:
    """A JPEG stored 64x48 with EXIF orientation 6: a viewer displays it 48x64."""
    image = Image.fromarray(np.zeros((48, 64, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    return path


def two_joints(root: Path, file_name: str, keypoints: list, **image) -> Path:
    """A keypoints file of one person with joints 'l' and 'r' on image ``file_name``."""
    payload = {
        "images": [{"id": "img0", "file_name": file_name, **image}],
        "annotations": [{"id": 1, "image_id": "img0", "category_id": 1, "bbox": [2, 2, 10, 10],
                         "keypoints": keypoints}],
        "categories": [{"id": 1, "name": "person", "keypoints": ["l", "r"], "flip_pairs": [["l", "r"]]}],
    }
    path = root / "people.json"
    path.write_text(json.dumps(payload))
    return path


def test_keypoints_are_checked_against_the_displayed_image_when_the_file_states_no_size(user):
    turned_jpeg(user / "turned.jpg")
    people = two_joints(user, "turned.jpg", [50, 10, 2, 5, 5, 2])  # x = 50: inside 64, outside 48
    assert_data_refused(
        PoseDataModule(train=[str(people)], role="target"),
        user,
        "people.json: annotation 1 (turned.jpg#1): keypoint 'l' at (50, 10) lies outside its 48x64 image",
    )


def test_string_image_ids_and_flip_pairs_by_joint_name_are_read_as_coco_means_them(user):
    data = PoseDataModule(train=[str(two_joints(user, "a.png", [10, 10, 2, 20, 20, 2]))], role="target")
    data.setup()
    assert data.skeleton.flip_pairs == [(0, 1)]
    assert [p.image_id for p in data.splits["train"]] == ["img0"]
    given = PoseDataModule(train=[str(user / "people.json")], role="target", flip_pairs=[("r", "l")])
    given.setup()
    assert given.skeleton.flip_pairs == [(1, 0)]
    assert given.skeleton.flip_order().tolist() == [1, 0]


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


def test_a_nearly_constant_volume_is_refused_naming_the_empty_scaling_range(user):
    voxels = np.zeros((16, 12, 8), np.float32)
    voxels[0, 0, 0] = 5  # percentiles 1 and 99 are both 0: MONAI would warn and leave it unscaled
    image = write_volume(voxels, small_geometry(user), user / "almost.nii.gz")
    with pytest.raises(DatalistError) as refused:
        load_volume({"id": "almost", "image": image}, VolumeSpec(), 2, use_label=False)
    message = str(refused.value)
    assert "almost.nii.gz: the intensity scaling range is empty: percentiles 1 and 99" in message
    assert "are both 0 (a nearly constant image); expected an image with varying intensities" in message


def test_an_infinite_voxel_is_refused_before_the_scaling_clips_it(user):
    voxels = scan().astype(np.float32)
    voxels[3, 3, 3] = np.inf
    image = write_volume(voxels, small_geometry(user), user / "bright.nii.gz")
    refused = r"bright.nii.gz: the image has 1 NaN or infinite voxels \(of 1536\); expected"
    with pytest.raises(DatalistError, match=refused):
        load_volume({"id": "bright", "image": image}, VolumeSpec(), 2, use_label=False)
