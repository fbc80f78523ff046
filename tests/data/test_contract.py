"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

import pytest


def test_a_datamodule_without_the_data_contract_is_refused_by_member():
    from sfda.data.contract import check_target_data
    from sfda.data.datamodules import DigitsDataModule

    check_target_data(DigitsDataModule("optdigits"))

    class Bare:
        class_names, input_spec = ["a", "b"], None

        def num_samples(self, split="train"):
            return 2

    with pytest.raises(
        ValueError, match=r"Bare lacks \['train_dataloader', 'val_dataloader', 'bank_dataloader'\]"
    ):
        check_target_data(Bare())
