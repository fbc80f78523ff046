"""Unit tests of the pseudo-label engine against brute-force references."""

import pytest
import torch


def test_target_pass_collects_fixed_and_variable_rows_in_index_order():
    from sfda.pseudo_labels.passes import collect_rows

    batches = [{"index": torch.tensor([3, 1])}, {"index": torch.tensor([0, 2])}]
    rows = collect_rows(batches, lambda b: {"score": b["index"].float() * 2,
                                            "boxes": [torch.ones(int(i), 4) * i for i in b["index"]]})
    assert rows["index"].tolist() == [0, 1, 2, 3] and rows["score"].tolist() == [0.0, 2.0, 4.0, 6.0]
    assert [tuple(b.shape) for b in rows["boxes"]] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert all(bool((b == i).all()) for i, b in enumerate(rows["boxes"]))
    with pytest.raises(ValueError, match="no batches"):
        collect_rows([], lambda b: {})
