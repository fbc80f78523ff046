"""Source-free active DA: budget, query strategies, sealed labels, annotators, rounds, resume, DDP."""

import numpy as np
import pytest

from sfda.data import DigitsDataModule
from sfda.data.active import SealedLabels


# sealed labels and annotators --------------------------------------------------------------------------
def test_target_training_labels_are_sealed_and_only_revealed_on_request():
    dm = DigitsDataModule("optdigits", role="target", train_subset=100, input=None)
    dm.setup()
    sealed = dm.splits["train"][1]
    assert isinstance(sealed, SealedLabels) and len(sealed) == 100
    for read in (lambda: np.asarray(sealed), lambda: sealed[0], lambda: list(sealed)):
        with pytest.raises(PermissionError, match="sealed"):
            read()
    assert dm.reveal_labels([3, 7]).shape == (2,) and sealed.revealed == [3, 7]
