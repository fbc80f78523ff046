"""Data layer: real digit sets, hidden target labels, the global batch sampler, user image folders."""

import numpy as np
import torch

from sfda.data import InputSpec
from sfda.data.datasets import ImageDataset


def test_test_view_inputs_are_kept_and_reused_within_a_memory_limit():
    from sfda.data.datasets import MemoryBudget, PreparedInputs

    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    spec = InputSpec(32, 3, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    one_image = 3 * 32 * 32  # kept resized as uint8: a quarter of the float input's bytes
    budget = MemoryBudget(limit_bytes=4 * one_image)
    PreparedInputs(budget).put(0, torch.zeros(3, 32, 32, dtype=torch.uint8), total=1)  # another split's share
    prepared = PreparedInputs(budget)
    first = ImageDataset(images, None, spec, view="test", prepared=prepared)
    again = ImageDataset(images, None, spec, view="test", prepared=prepared)  # another loader, same split
    items = [first[i]["image"] for i in range(6)]
    # one slab, reserved at the first use for as many samples as the budget leaves room for: the first 3
    assert prepared.slab.shape == (3, 3, 32, 32) and prepared.slab.dtype == torch.uint8
    assert prepared.count == 3 and budget.used_bytes == 4 * one_image
    assert [prepared.get(i) is not None for i in range(6)] == [True] * 3 + [False] * 3
    assert all(torch.equal(again[i]["image"], items[i]) for i in range(6))
    # the kept inputs give, bit for bit, what the albumentations pipeline (resize, normalise) gives
    import albumentations as A

    reference = A.Compose([A.Resize(32, 32),
                           A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0)])
    for i in range(6):
        rgb = np.repeat(images[i][:, :, None], 3, axis=2)
        expected = torch.from_numpy(reference(image=rgb)["image"].transpose(2, 0, 1).copy())
        assert items[i].dtype == torch.float32 and torch.equal(items[i], expected)
    weak = ImageDataset(images, None, spec, view="weak", prepared=prepared)  # random views are never kept
    assert weak.prepared is None


def test_keep_inputs_mib_is_the_datamodules_budget_and_zero_decodes_every_pass():
    import pytest

    from sfda.data import DigitsDataModule

    spec = InputSpec(28, 1, (0.5,), (0.5,))
    kept = DigitsDataModule("optdigits", eval_subset=40, input=spec)
    none = DigitsDataModule("optdigits", eval_subset=40, input=spec, keep_inputs_mib=0)
    assert kept.prepared_budget.limit_bytes == 1024**3 and none.prepared_budget.limit_bytes == 0
    with_kept, without = kept.dataset("test"), none.dataset("test")
    for _ in range(2):  # the second pass reads what the first kept
        assert all(torch.equal(with_kept[i]["image"], without[i]["image"]) for i in range(40))
    assert with_kept.prepared.count == 40 and without.prepared.count == 0
    with pytest.raises(ValueError, match=r"data.keep_inputs_mib: expected an integer >= 0, got -1"):
        DigitsDataModule("optdigits", keep_inputs_mib=-1)


def test_loader_workers_keep_no_test_view_inputs():
    """A worker process would keep a copy of its own, beyond the budget: only the main process keeps."""
    from torch.utils.data import DataLoader

    from sfda.data.datasets import MemoryBudget, PreparedInputs

    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    budget = MemoryBudget(limit_bytes=2**20)
    dataset = ImageDataset(images, None, InputSpec(28, 1, (0.5,), (0.5,)), view="test",
                           prepared=PreparedInputs(budget))
    assert len(list(DataLoader(dataset, batch_size=2, num_workers=1))) == 2
    assert budget.used_bytes == 0 and dataset.prepared.count == 0
    dataset[0]
    assert budget.used_bytes == 4 * 28 * 28 and dataset.prepared.count == 1  # room for the 4 uint8 images
