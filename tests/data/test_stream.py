"""The data side of online test-time adaptation: stream order per setting, labels correlated on demand, each
process's share of a global batch, corrupted domains fixed by the image, and refusals by field."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.data.stream import (
    GRADUAL,
    CorruptedImages,
    Domain,
    StreamBatchSampler,
    StreamDataModule,
    stream_steps,
)


def domains(sizes=(10, 7), classes: int = 3) -> list[Domain]:
    rng = np.random.default_rng(0)
    return [Domain(f"d{k}", rng.integers(0, 255, (n, 8, 8), dtype=np.uint8), np.arange(n) % classes)
            for k, n in enumerate(sizes)]


def test_domains_follow_each_other_in_seeded_batches_that_never_span_two():
    steps = stream_steps(domains(), 4, "continual", "iid", 0.1, seed=3)
    assert [s.domain for s in steps] == [0, 0, 0, 1, 1]  # 10 = 4+4+2, then 7 = 4+3
    assert [len(s.samples) for s in steps] == [4, 4, 2, 4, 3]
    for step in steps:
        assert {d for d, _ in step.samples} == {step.domain}
    seen = [pair for s in steps for pair in s.samples]
    assert sorted(seen) == [(0, i) for i in range(10)] + [(1, i) for i in range(7)]
    assert [s.position for s in steps] == [0, 4, 8, 10, 14]
    again = stream_steps(domains(), 4, "continual", "iid", 0.1, seed=3)
    other = stream_steps(domains(), 4, "continual", "iid", 0.1, seed=4)
    assert [s.samples for s in again] == [s.samples for s in steps]
    assert [s.samples for s in other] != [s.samples for s in steps]


def test_mixed_domains_shuffle_every_domain_together():
    steps = stream_steps(domains((40, 40)), 8, "mixed_domains", "iid", 0.1, seed=0)
    assert all(s.domain == -1 for s in steps)
    mixed = [len({d for d, _ in s.samples}) for s in steps]
    assert max(mixed) == 2 and sum(len(s.samples) for s in steps) == 80


def test_correlated_labels_come_in_runs_and_iid_labels_do_not():
    stream = domains((600,), classes=10)
    changes = {}
    for order in ("iid", "correlated"):
        steps = stream_steps(stream, 20, "continual", order, 0.1, seed=0)
        labels = [int(stream[0].labels[i]) for s in steps for _, i in s.samples]
        assert sorted(labels) == sorted(stream[0].labels.tolist())  # every sample once
        changes[order] = sum(a != b for a, b in zip(labels, labels[1:], strict=False))
    assert changes["correlated"] < changes["iid"] / 4


def test_each_process_takes_its_slice_and_a_rank_without_one_takes_an_unscored_copy():
    steps = stream_steps(domains((5,)), 5, "continual", "iid", 0.1, seed=0)  # one batch of 5
    whole = list(StreamBatchSampler(steps))[0]
    shares = [list(StreamBatchSampler(steps, rank=r, world_size=2))[0] for r in range(2)]
    assert shares[0] + shares[1] == whole  # 3 + 2, positions unique
    steps = stream_steps(domains((5,)), 4, "continual", "iid", 0.1, seed=0)  # batches of 4 and 1
    last = [list(StreamBatchSampler(steps, rank=r, world_size=2))[1] for r in range(2)]
    assert [len(x) for x in last] == [1, 1] and last[0][0][3] == 1.0 and last[1][0][3] == 0.0
    assert last[0][0][2] == last[1][0][2] == 4  # the copy has the same stream position: never counted twice
    assert list(StreamBatchSampler(steps, start=1)) == [list(StreamBatchSampler(steps))[1]]


def test_gradual_passes_each_corruption_through_severities_one_to_five_and_back():
    source = CorruptedImages("mnist", corruptions=["brightness", "contrast"], subset=4)
    stream = StreamDataModule(source, setting="gradual", severities=[3])
    assert stream.domain_names == [f"brightness-{s}" for s in GRADUAL] + [f"contrast-{s}" for s in GRADUAL]
    assert not stream.resets and StreamDataModule(source, setting="reset_each_shift").resets


def test_a_corrupted_domain_is_fixed_by_the_image_and_stronger_at_a_higher_severity():
    source = CorruptedImages("mnist", corruptions=["gaussian_noise"], subset=16)
    mild, strong = source.domain("gaussian_noise", 1), source.domain("gaussian_noise", 5)
    clean = source.clean()[0].astype(float)
    assert np.array_equal(mild.image(3), source.domain("gaussian_noise", 1).image(3))
    noise = [mild.image(i).astype(float) - clean[i] for i in (3, 4)]
    assert not np.array_equal(*noise)  # each image draws its own noise
    diff = [np.abs(d.image(i).astype(float) - clean[i]).mean() for d in (mild, strong) for i in range(16)]
    assert np.mean(diff[16:]) > np.mean(diff[:16]) > 0


@pytest.mark.parametrize("kwargs, needle", [
    ({"severities": [0]}, "data.severities: expected severities in 1-5, got 0"),
    ({"severities": [6]}, "data.severities: expected severities in 1-5, got 6"),
    ({"severities": []}, "data.severities: expected at least one"),
    ({"setting": "sometimes"}, "data.setting: expected one of"),
    ({"label_order": "sorted"}, "data.label_order: expected one of"),
    ({"dirichlet_alpha": 0.0}, "data.dirichlet_alpha: expected a concentration > 0"),
    ({"batch_size": 0}, "data.batch_size: expected an integer >= 1"),
])
def test_a_bad_stream_option_is_refused_naming_the_field(kwargs, needle):
    source = CorruptedImages("mnist", corruptions=["brightness"], subset=4)
    with pytest.raises(ValueError, match=needle):
        StreamDataModule(source, **kwargs)


@pytest.mark.parametrize("kwargs, needle", [
    ({"corruptions": ["rain"]}, "data.source.corruptions"),
    ({"corruptions": []}, "data.source.corruptions: expected at least one"),
    ({"dataset": "cifar10"}, "data.source.dataset: unknown dataset 'cifar10'"),
    ({"subset": 0}, "data.source.subset: expected an integer >= 1"),
])
def test_a_bad_corrupted_source_is_refused_naming_the_field(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        CorruptedImages(**kwargs)
