"""The bad-input catalogue, annotation files that lie: COCO boxes, COCO keypoints and medical volumes.
Every refusal asserts the exit status (through the CLI) or the error, that the message names the file
and the field and the expected value, and that the user's files are unchanged. Crowd regions are
checked to be neither trained on nor scored. All cases run in-process on tiny real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from kits.bad_input import assert_refused, recipe
from kits.coco import assert_data_refused, turned_jpeg

from sfda.data import PoseDataModule
from sfda.data.benchmarks.pose_figures import generate
from sfda.data.keypoints import read_people


# --- COCO keypoints: a person file that lies ----
@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, Path]:
    """Four generated pose figures and an untrained pose artifact (outside every user folder)."""
    from kits.pose import pose_artifact

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
    # a target person WITHOUT a keypoints field is accepted (labels only report): test_keypoints_pose.py
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


def test_a_keypoints_file_holding_a_json_list_is_refused_naming_the_shape(user):
    path = user / "people.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"people.json: holds a JSON list; expected a COCO keypoints JSON"):
        read_people(str(path))


# --- round 4: what the files say is read as the files mean it, or refused by name ----


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
