"""Unit tests of the pseudo-label engine against brute-force references."""

import pytest
import torch

from sfda.pseudo_labels import (
    TargetBank,
)


def test_bank_writes_rows_by_global_index_and_tracks_fill():
    bank = TargetBank(6, {"features": 3, "scores": 2})
    bank.write(torch.tensor([4, 1]), features=torch.ones(2, 3), scores=torch.tensor([[0.2, 0.8], [0.6, 0.4]]))
    assert torch.equal(bank.read("scores", torch.tensor([1, 4])), torch.tensor([[0.6, 0.4], [0.2, 0.8]]))
    assert bank.filled.tolist() == [False, True, False, False, True, False] and not bank.is_full()
    assert "features" in bank.state_dict() and bank.state_dict()["features"].shape == (6, 3)
    with pytest.raises(KeyError, match="no field"):
        bank.write(torch.tensor([0]), logits=torch.zeros(1, 2))
