"""Box datasets: the three annotation formats, the checks, tiles, views of one geometry, hidden
target boxes."""

import json

import numpy as np
from kits.detection import digit_sets
from PIL import Image


def test_the_digit_benchmark_is_deterministic_and_named_semi_synthetic(tmp_path):
    first = digit_sets(tmp_path / "a", train=3, test=1)["photo"]
    second = digit_sets(tmp_path / "b", train=3, test=1)["photo"]
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["annotations"] == b["annotations"] and "SEMI-SYNTHETIC" in a["info"]["description"]
    assert np.array_equal(
        np.asarray(Image.open(first.parent / "00002.png")),
        np.asarray(Image.open(second.parent / "00002.png")),
    )
