"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import numpy as np
import torch
from kits.bad_input import (
    assert_refused,
    shot_recipe,
)
from PIL import Image


def test_sixteen_bit_images_are_read_on_their_true_range(workspace):
    from sfda.data.datasets import ImageDataset
    from sfda.data.transforms import InputSpec

    Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(workspace / "grey16.png")
    Image.fromarray(np.full((8, 8), 127, np.uint8)).save(workspace / "grey8.png")
    dataset = ImageDataset(
        [workspace / "grey16.png", workspace / "grey8.png"], None, InputSpec(8, 1, (0.0,), (1.0,))
    )
    assert Image.open(workspace / "grey16.png").mode.startswith("I;16")
    assert torch.allclose(dataset[0]["image"], dataset[1]["image"], atol=1 / 255)


def test_a_corrupt_image_names_the_file(workspace):
    (workspace / "target" / "3" / "broken.png").write_bytes(b"not a png")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace)], workspace, "broken.png", "corrupt or unreadable"
    )


def test_a_decompression_bomb_image_names_the_file(workspace):
    Image.new("1", (14000, 14000)).save(workspace / "target" / "5" / "huge.png")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace)], workspace, "huge.png", "too large to decode safely"
    )
