"""Detection engine pieces: VOC AP by hand, pseudo-box selection, LPLD's loss, and driving
torchvision's Faster R-CNN part by part (background is class 0)."""

import pytest
import torch

from sfda.models.keyed_sampling import KeyedSampler


def test_keyed_sampling_does_not_depend_on_how_the_batch_is_split():
    matched = [torch.randint(-1, 3, (500,)) for _ in range(4)]
    index = torch.tensor([10, 11, 12, 13])
    whole = KeyedSampler(64, 0.25, salt=1)
    whole.set_keys(index, seed=0, step=5)
    pos, neg = whole(matched)
    halves = KeyedSampler(64, 0.25, salt=1)
    for part in (slice(0, 2), slice(2, 4)):
        halves.set_keys(index[part], seed=0, step=5)
        p, n = halves(matched[part])
        assert all(torch.equal(a, b) for a, b in zip(p + n, pos[part] + neg[part], strict=True))
    whole.set_keys(index, seed=0, step=6)
    assert not all(
        torch.equal(a, b) for a, b in zip(whole(matched)[0], pos, strict=True)
    )  # a new draw each step
    with pytest.raises(RuntimeError, match="set_keys"):
        KeyedSampler(64, 0.25, salt=1)(matched)
