"""Pose data: the semi-synthetic figure generator (deterministic, human-like, occlusion labelled)."""

from __future__ import annotations

import json

import pytest

from sfda.data.benchmarks.pose_figures import generate
from sfda.data.pose import PoseDataModule
from sfda.data.pose_views import Augment
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


# bad input -------------------------------------------------------------------------------------------
def edited(figures, tmp_path, change) -> str:
    payload = json.loads(figures["flat_train"].read_text())
    change(payload)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(payload))
    for image in payload["images"]:
        (tmp_path / image["file_name"]).write_bytes(
            (figures["flat_train"].parent / image["file_name"]).read_bytes()
        )
    return str(path)


def refused(path: str, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        PoseDataModule([path], role="source", input=SPEC, **kwargs).setup()
    return str(err.value)


def test_a_keypoint_outside_its_image_is_refused_naming_file_annotation_and_joint(figures, tmp_path):
    def move(payload):
        payload["annotations"][3]["keypoints"][0] = 140.0

    text = refused(edited(figures, tmp_path, move))
    assert "edited.json: annotation 3" in text and "'r_ankle' at (140" in text and "0 <= x < 128" in text


def test_a_joint_count_that_differs_is_refused(figures, tmp_path):
    def drop(payload):
        payload["annotations"][2]["keypoints"] = payload["annotations"][2]["keypoints"][:-3]

    assert "annotation 2: keypoints holds 15 joints" in refused(edited(figures, tmp_path, drop))
    module = data(figures)
    with pytest.raises(ValueError) as err:
        module.check_model_joints(17)
    text = str(err.value)
    assert text.startswith(str(figures["flat_train"]))  # the file, not "data:"
    assert "names 16 joints (r_ankle, r_knee, r_hip, l_hip, ... (12 more))" in text
    assert "source model predicts 17 heatmaps" in text and "train a source model" in text


def test_missing_flip_pairs_with_flips_on_are_refused(figures, tmp_path):
    def strip(payload):
        del payload["categories"][0]["flip_pairs"]

    path = edited(figures, tmp_path, strip)
    module = PoseDataModule([path], role="source", input=SPEC)
    module.setup()  # reading and scoring need no flip pairs (sfda test) ...
    module.dataset("val")
    with pytest.raises(ValueError, match="names 16 joints .* but the source model predicts 17"):
        module.check_model_joints(17)  # ... so a joint-count problem is the one reported
    with pytest.raises(ValueError, match=r"categories\[\].flip_pairs: horizontal flips are on but no flip"):
        module.dataset("train", train=True)  # flipped training views need them
    unflipped = PoseDataModule([path], role="source", input=SPEC, augment=Augment(flip=False))
    unflipped.dataset("train", train=True)
    PoseDataModule([path], role="source", input=SPEC, flip_pairs=[(0, 5)]).dataset("train", train=True)


def test_target_people_need_no_keypoints_but_source_people_do(figures, tmp_path):
    def unlabel(payload):
        for annotation in payload["annotations"]:
            del annotation["keypoints"]

    path = edited(figures, tmp_path, unlabel)
    target = PoseDataModule([path], role="target", input=SPEC)
    target.setup()
    assert not target.dataset("train", train=True, strong=True)[(0, 3)]["labelled"]
    assert not target.dataset("test")[0]["labelled"]  # no score from people without labels
    text = refused(path)
    assert "annotation 0: no 'keypoints' field; expected 48 numbers" in text
    assert "Only target people" in text


def test_a_training_person_without_any_labelled_joint_is_refused(figures, tmp_path):
    def blank(payload):
        payload["annotations"][1]["keypoints"] = [0.0] * 48

    text = refused(edited(figures, tmp_path, blank))
    assert "annotation 1" in text and "no labelled joint" in text
