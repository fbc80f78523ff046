"""Detection methods end to end on tiny real inputs: Mean Teacher and LPLD steps, evaluation,
predictions in original-image pixels, source training, and artifacts of the wrong task."""

import json

import pytest
import torch
from kits.detection import DIGITS, detection_inputs, target_data, trainer

from sfda.methods import DetectionSourceOnly
from sfda.tasks.writers.detections import to_original


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return detection_inputs(tmp_path_factory.mktemp("detection"))


def test_predictions_are_written_in_original_image_pixels(inputs, tmp_path):
    # 64-pixel tiles of the 128-pixel canvases, each resized to the model's 128: scale 0.5, offsets 0 or 64
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert to_original(boxes, torch.tensor([64.0, 0.0, 128.0, 64.0]), torch.tensor([0.5, 0.5])).tolist() == [
        [69.0, 10.0, 79.0, 20.0]
    ]
    method = DetectionSourceOnly(str(inputs["artifact"]))
    run = trainer(tmp_path)
    run.predict(method, datamodule=target_data(inputs, tile_size=64, tile_overlap=0.0))
    run_dir = tmp_path / "lightning_logs" / "version_0"
    payload = json.loads((run_dir / "detections.json").read_text())
    assert len(payload["images"]) == 4 * 4 and {c["name"] for c in payload["categories"]} == set(DIGITS)
    windows = {tuple(im["window"]) for im in payload["images"]}
    assert windows == {
        (0.0, 0.0, 64.0, 64.0),
        (64.0, 0.0, 128.0, 64.0),
        (0.0, 64.0, 64.0, 128.0),
        (64.0, 64.0, 128.0, 128.0),
    }
    assert payload["annotations"]  # an untrained detector still returns boxes above 0.05
    for det in payload["annotations"]:
        window = payload["images"][[im["id"] for im in payload["images"]].index(det["image_id"])]["window"]
        x, y, w, h = det["bbox"]
        assert window[0] - 0.01 <= x and x + w <= window[2] + 0.01 and window[1] - 0.01 <= y <= window[3]
    assert len(list((run_dir / "overlays").glob("*.png"))) == 16
