"""Pose methods on tiny generated figures: source training writes an artifact adaptation loads, Mean
Teacher's pseudo heatmaps follow the views, pose SFDA trains the right parts in the right order with
detached targets and the EMA into I, occlusion, predictions in original pixels, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from kits.pose import SPEC, pose_inputs, target_data

from sfda.tasks.writers.keypoints import coco_results


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return pose_inputs(tmp_path_factory.mktemp("pose"))


def test_predictions_go_back_to_original_image_pixels(inputs):
    data = target_data(inputs)
    data.input_spec = SPEC
    data.setup()
    item = data.dataset("test")[0]
    prediction = {
        "index": torch.tensor([0]),
        "matrix": item["matrix"][None],
        "keypoints": item["keypoints"][None],
        "scores": torch.ones(1, 16),
    }
    result = coco_results(prediction, data)[0]
    person = data.splits["test"][0]
    points = torch.tensor(result["keypoints"]).reshape(16, 3)
    labelled = torch.from_numpy(person.keypoints[:, 2] > 0)
    assert torch.allclose(
        points[labelled, :2].double(), torch.from_numpy(person.keypoints[:, :2])[labelled], atol=1e-2
    )
    assert result["image_id"] == person.image_id and json.dumps(result)


def test_results_keep_the_files_category_and_weak_joints_are_drawn_faded(inputs, tmp_path):
    import numpy as np
    from PIL import Image

    from sfda.tasks.writers.keypoints import overlay_png

    payload = json.loads(inputs["test"].read_text())
    payload["categories"][0]["id"] = 7
    for annotation in payload["annotations"]:
        annotation["category_id"] = 7
    (inputs["test"].parent / "category7.json").write_text(json.dumps(payload))
    data = target_data(inputs)
    data.locations["eval"] = [str(inputs["test"].parent / "category7.json")]
    data.input_spec = SPEC
    data.setup()
    item = data.dataset("test")[0]
    prediction = {"index": torch.tensor([0]), "matrix": item["matrix"][None],
                  "keypoints": item["keypoints"][None], "scores": torch.ones(1, 16)}
    assert coco_results(prediction, data)[0]["category_id"] == 7
    grey = np.full((64, 64, 3), 0, np.uint8)
    points = item["keypoints"]
    panels = {"m": {"keypoints": points, "scores": torch.full((16,), 0.05)}}
    weak = overlay_png(grey, panels, data.skeleton.edges, tmp_path / "weak.png")
    assert np.asarray(Image.open(weak)).max() > 0  # drawn (faded), not a blank crop
