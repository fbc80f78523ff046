"""Data layer: real digit sets, hidden target labels, the global batch sampler, user image folders."""

import pytest

from sfda.data.samplers import GlobalBatchSampler


@pytest.mark.parametrize("world", [2, 4])
def test_global_batches_do_not_depend_on_process_count(world):
    single = list(GlobalBatchSampler(103, 8, shuffle=True, drop_last=True, seed=3))
    shards = [list(GlobalBatchSampler(103, 8, shuffle=True, drop_last=True, seed=3, rank=r, world_size=world))
              for r in range(world)]
    assert all(len(s) == len(single) for s in shards)
    for step, batch in enumerate(single):
        assert sum((s[step] for s in shards), []) == batch


def test_evaluation_sampler_covers_every_sample_once():
    shards = [list(GlobalBatchSampler(21, 8, shuffle=False, drop_last=False, rank=r, world_size=2))
              for r in range(2)]
    seen = sorted(i for s in shards for b in s for i in b)
    assert seen == list(range(21))
    lengths = [len(GlobalBatchSampler(21, 8, False, False, rank=r, world_size=2)) for r in range(2)]
    assert lengths == [len(s) for s in shards]
