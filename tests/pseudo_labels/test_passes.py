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


@pytest.mark.parametrize("expected_batches", [None, 1, 3, 50])
def test_fixed_rows_are_the_same_whatever_the_capacity_hint_and_keep_their_dtype(expected_batches):
    """Rows go into one reserved tensor per field: a hint too small (it grows) or too large (it is cut)
    gives what joining the pieces gives."""
    from sfda.pseudo_labels.passes import RowBuffer, collect_rows

    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(23, generator=gen)
    batches = [{"index": order[i : i + 5]} for i in range(0, 23, 5)]  # 5 batches, the last of 3
    features = torch.randn(23, 4, 2, generator=gen)
    rows = collect_rows(batches, lambda b: {"features": features[b["index"]].half(),
                                            "label": b["index"] * 10}, expected_batches=expected_batches)
    assert rows["features"].dtype == torch.float16 and rows["label"].dtype == torch.int64
    assert torch.equal(rows["features"], features.half())
    assert torch.equal(rows["label"], torch.arange(23) * 10)
    buffer = RowBuffer(torch.zeros(2, 3), capacity=2)
    buffer.append(torch.ones(5, 3))  # beyond the capacity: grown, the first rows kept
    assert buffer.rows().shape == (7, 3) and buffer.rows()[:2].eq(0).all() and buffer.rows()[2:].eq(1).all()


def test_rows_gathered_in_order_share_the_buffer_and_a_grown_buffer_is_trimmed():
    """One process, batches in index order: the gathered rows ARE the reserved buffer (no indexed copy of
    every field); out of order they are a sorted copy; a buffer grown by doubling is cut to its rows."""
    from sfda.pseudo_labels.passes import RowBuffer, RowCollector

    features = torch.randn(12, 4)
    in_order = RowCollector(expected_batches=3)
    for start in (0, 4, 8):
        in_order.add(torch.arange(start, start + 4), {"features": features[start : start + 4]})
    reserved = in_order.fixed["features"].data
    rows = in_order.gather()
    assert torch.equal(rows["features"], features) and rows["index"].tolist() == list(range(12))
    assert rows["features"].data_ptr() == reserved.data_ptr() and not in_order.fixed

    shuffled = RowCollector(expected_batches=3)
    for index in (torch.tensor([4, 5, 6, 7]), torch.tensor([0, 1, 2, 3]), torch.tensor([8, 9, 10, 11])):
        shuffled.add(index, {"features": features[index]})
    reserved = shuffled.fixed["features"].data
    rows = shuffled.gather()
    assert torch.equal(rows["features"], features) and rows["features"].data_ptr() != reserved.data_ptr()

    buffer = RowBuffer(torch.zeros(2, 3), capacity=2)
    buffer.append(torch.ones(3, 3))  # grown to 5 rows of room... then 10 with the next
    buffer.append(torch.ones(1, 3))
    kept = buffer.take()
    assert kept.shape == (6, 3) and kept.untyped_storage().nbytes() == 6 * 3 * 4 and len(buffer.rows()) == 0
