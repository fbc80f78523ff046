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
    with pytest.raises(ValueError, match=r"16 joints .* but the model predicts 17 heatmaps"):
        module.check_model_joints(17)


def test_missing_flip_pairs_with_flips_on_are_refused(figures, tmp_path):
    def strip(payload):
        del payload["categories"][0]["flip_pairs"]

    path = edited(figures, tmp_path, strip)
    assert "categories[].flip_pairs: horizontal flips are on but no flip pairs" in refused(path)
    PoseDataModule([path], role="source", input=SPEC, augment=Augment(flip=False)).setup()  # accepted
    PoseDataModule([path], role="source", input=SPEC, flip_pairs=[(0, 5)]).setup()


def test_a_training_person_without_any_labelled_joint_is_refused(figures, tmp_path):
    def blank(payload):
        payload["annotations"][1]["keypoints"] = [0.0] * 48

    text = refused(edited(figures, tmp_path, blank))
    assert "annotation 1" in text and "no labelled joint" in text
