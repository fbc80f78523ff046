"""Universal DA: class-split protocols, H-score, GLC engine pieces against references, SHOT-O/GLC runs."""

from __future__ import annotations

import pytest

from sfda.data import ClassSplit, ClassSplitError, DigitsDataModule, InputSpec

SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))


# class splits --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"shared": []}, "data.split.shared"),
    ({"shared": [0, 1], "source_private": [1, 2]}, "data.split.shared and data.split.source_private overlap"),
    ({"shared": [0], "source_private": [3], "target_private": [3]},
     "data.split.source_private and data.split.target_private"),
    ({"shared": [0, 0]}, "data.split.shared: repeated"),
])
def test_bad_splits_name_the_recipe_field(kwargs, field):
    with pytest.raises(ClassSplitError, match=field):
        ClassSplit(**kwargs)


def test_settings_follow_the_class_lists():
    assert ClassSplit(shared=[0, 1]).setting == "closed"
    assert ClassSplit(shared=[0], source_private=[1]).setting == "pda"
    assert ClassSplit(shared=[0, 1], target_private=[2]).setting == "osda"
    assert ClassSplit(shared=[0], source_private=[1], unknown_dataset="fashion_mnist").setting == "opda"


def test_opda_target_keeps_shared_digits_and_mixes_in_fashion_as_unknown():
    split = ClassSplit(shared=[0, 1, 2, 3, 4, 5], source_private=[6, 7, 8, 9],
                       unknown_dataset="fashion_mnist", unknown_ratio=0.5)
    dm = DigitsDataModule("optdigits", role="target", input=SPEC, split=split)
    dm.setup()
    _, labels = dm.splits["test"]
    known = labels < 10
    assert set(labels[known].tolist()) == {0, 1, 2, 3, 4, 5} and dm.unknown_label == 10
    assert (labels == 10).sum() == round(0.5 * known.sum())
    assert dm.class_names == [str(d) for d in range(10)]  # the source model's 10 outputs
    train = dm.dataset("train")
    assert train[0]["label"] == -1  # labels stay hidden in the adaptation set


def test_target_private_classes_become_unknown_and_source_role_keeps_source_classes():
    split = ClassSplit(shared=[0, 1, 2, 3, 4, 5], target_private=[6, 7, 8, 9])
    target = DigitsDataModule("optdigits", role="target", input=SPEC, split=split)
    target.setup()
    _, labels = target.splits["test"]
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3, 4, 5, 6] and target.unknown_label == 6
    source = DigitsDataModule("optdigits", role="source", input=SPEC, split=split)
    source.setup()
    assert sorted(set(source.splits["train"][1].tolist())) == [0, 1, 2, 3, 4, 5]
    assert len(source.class_names) == 6


def test_split_classes_must_exist_in_the_dataset():
    with pytest.raises(ValueError, match=r"data.split: classes \[12\] do not exist in optdigits"):
        DigitsDataModule("optdigits", split=ClassSplit(shared=[0, 12]))


def test_overlapping_class_split_lists_are_refused(workspace):
    from sfda.data.class_split import ClassSplit, ClassSplitError

    with pytest.raises(ClassSplitError, match="split"):
        ClassSplit(shared=[0, 1, 2], source_private=[2, 3])
