"""Data layer: real digit sets, hidden target labels, the global batch sampler, user image folders."""

from sfda.data import DigitsDataModule, InputSpec
from sfda.data.datasets import UNLABELLED

SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))


def test_target_training_data_hides_labels_and_returns_global_index():
    dm = DigitsDataModule("optdigits", role="target", input=SPEC, train_subset=100)
    dm.setup()
    item = dm.dataset("train")[7]
    assert item["label"] == UNLABELLED and item["index"] == 7 and item["image"].shape == (1, 28, 28)
    assert dm.dataset("val")[0]["label"] >= 0  # the evaluation split keeps labels for reporting
    batch = next(iter(dm.bank_dataloader()))
    assert (batch["label"] == UNLABELLED).all()


def test_source_role_holds_out_ten_percent():
    dm = DigitsDataModule("optdigits", role="source", input=SPEC)
    dm.setup()
    n_train, n_val = len(dm.splits["train"][0]), len(dm.splits["val"][0])
    assert n_val == int((n_train + n_val) * 0.1)
