"""Data layer: real digit sets, hidden target labels, the global batch sampler, user image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kits.bad_input import (
    SOURCE_INPUT,
    assert_refused,
    folder_data,
    recipe,
)

from sfda.data import InputSpec
from sfda.data.datasets import ImageDataset
from sfda.data.samplers import GlobalBatchSampler


def test_training_augmentation_is_seeded_per_sample_not_by_global_state():
    images = np.random.default_rng(0).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    dataset = ImageDataset(images, None, InputSpec(28, 1, (0.5,), (0.5,)), view="strong")
    batches = list(GlobalBatchSampler(6, 3, shuffle=True, drop_last=True, seed=5, seeded=True))
    key = batches[0][0]
    assert isinstance(key, tuple) and key[0] in range(6)
    first = dataset[key]["image"]
    torch.manual_seed(123), np.random.seed(7)  # global state must not matter
    dataset[(key[0], key[1] + 1)]  # nor what was drawn in between
    assert torch.equal(dataset[key]["image"], first)
    assert not torch.equal(dataset[(key[0], key[1] + 1)]["image"], first)
    assert dataset[key]["index"] == key[0]
    sampler = GlobalBatchSampler(6, 3, shuffle=True, drop_last=True, seed=5, seeded=True)
    sampler.set_epoch(1)
    assert [k[1] for b in sampler for k in b] != [k[1] for b in batches for k in b]  # a new draw each epoch


def test_input_spec_checks_channels():
    with pytest.raises(ValueError, match=r"input.mean: expected 3 values"):
        InputSpec(size=8, channels=3, mean=(0.5,), std=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("spec", [InputSpec(28, 1, (0.5,), (0.5,)),
                                  InputSpec(32, 3, (0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197))])
def test_the_test_view_equals_the_albumentations_pipeline_bit_for_bit(spec):
    """``TestView`` replaces ``A.Compose([A.Resize, A.Normalize])`` for speed: same tensors, exactly."""
    import albumentations as A

    from sfda.data.transforms import build_view, to_tensor

    pipeline = A.Compose([A.Resize(spec.size, spec.size),
                          A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0)])
    rng = np.random.default_rng(0)
    for shape in [(28, 28), (32, 32, 1), (20, 24, 3), (45, 40), (32, 32, 3), (7, 50, 4)]:
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        fast = to_tensor(image, spec, build_view(spec, "test"))
        assert torch.equal(fast, to_tensor(image, spec, pipeline)), shape
    floats = rng.random((30, 30, spec.channels), dtype=np.float32)  # not uint8: the pipeline itself
    assert torch.equal(to_tensor(floats, spec, build_view(spec, "test")), to_tensor(floats, spec, pipeline))


def source_recipe(root, **model_args):
    model = {"class_path": "sfda.methods.SourceTraining", "init_args": {"bottleneck_dim": 16, **model_args}}
    data = folder_data(root / "target", role="source", input=SOURCE_INPUT)
    return str(recipe(root / "source_train.yaml", model, data))


@pytest.mark.parametrize(
    "override, needle",
    [
        ("--data.init_args.input.size=0", "input.size: expected a positive integer"),
        ("--data.init_args.input.std=[0.0]", "input.std: expected positive values"),
    ],
)
def test_source_input_specs_that_cannot_work_are_refused(workspace, override, needle):
    assert_refused(["fit", "--config", source_recipe(workspace), override], workspace, needle)
