"""Unit tests of the pseudo-label engine against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kits.bad_input import (
    assert_refused,
    folder_data,
    recipe,
)
from scipy.spatial.distance import cdist

from sfda.pseudo_labels import (
    cosine_knn,
)


def test_cosine_knn_matches_brute_force_and_excludes_self():
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(200, 16, generator=gen)
    index = torch.tensor([3, 50, 199])
    sims, idx = cosine_knn(bank[index], bank, k=5, query_index=index, chunk_size=2, backend="torch")
    ref = 1 - cdist(bank[index].numpy(), bank.numpy(), "cosine")
    ref[np.arange(3), index.numpy()] = -np.inf
    ref_idx = np.argsort(-ref, axis=1)[:, :5]
    assert np.array_equal(idx.numpy(), ref_idx)
    assert np.allclose(sims.numpy(), np.take_along_axis(ref, ref_idx, 1), atol=1e-5)
    assert not (idx == index[:, None]).any()


def test_cosine_knn_on_rows_already_unit_length_skips_normalising_with_the_same_result():
    gen = torch.Generator().manual_seed(1)
    bank = torch.nn.functional.normalize(torch.randn(300, 16, generator=gen), dim=1)
    index = torch.tensor([0, 5, 299])
    sims, idx = cosine_knn(bank[index], bank, k=7, query_index=index, backend="torch")
    fast_sims, fast_idx = cosine_knn(bank[index], bank, k=7, query_index=index, backend="torch",
                                     normalised=True)
    assert torch.equal(idx, fast_idx) and torch.allclose(sims, fast_sims, atol=1e-6)
    # the flag is a promise: rows that are not unit length are then ranked by dot product, not cosine
    scaled = bank * torch.linspace(0.1, 10, 300)[:, None]
    assert not torch.equal(cosine_knn(bank[index], scaled, k=7, query_index=index, normalised=True)[1], idx)


def test_cosine_knn_faiss_agrees_with_torch():
    pytest.importorskip("faiss", reason="faiss is the optional [faiss] extra")
    from sfda.pseudo_labels import cosine_knn_faiss

    bank = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    index = torch.arange(20)
    torch_idx = cosine_knn(bank[index], bank, 4, index, backend="torch")[1]
    assert torch.equal(cosine_knn_faiss(bank[index], bank, 4, index)[1], torch_idx)


@pytest.mark.parametrize("queries", [1, 40])  # "auto" takes faiss for one query, torch for more
@pytest.mark.parametrize("with_self", [True, False])
def test_cosine_knn_backends_find_the_same_neighbours(queries, with_self):
    pytest.importorskip("faiss", reason="faiss is the optional [faiss] extra")
    gen = torch.Generator().manual_seed(2)
    bank = torch.randn(500, 12, generator=gen) * 3 + 1  # unnormalised rows: both backends normalise
    index = torch.randperm(500, generator=gen)[:queries]
    query_index = index if with_self else None
    found = {b: cosine_knn(bank[index], bank, 6, query_index, backend=b) for b in ("torch", "faiss", "auto")}
    for backend in ("faiss", "auto"):
        assert torch.equal(found[backend][1], found["torch"][1])
        assert torch.allclose(found[backend][0], found["torch"][0], atol=1e-5)
    if with_self:
        assert not (found["faiss"][1] == index[:, None]).any()
    else:  # every row is its own nearest neighbour
        assert torch.equal(found["faiss"][1][:, 0], index)


def test_cosine_knn_honours_the_block_bound_with_identical_results(monkeypatch):
    import sfda.pseudo_labels.knn as knn

    gen = torch.Generator().manual_seed(3)
    bank = torch.randn(300, 16, generator=gen)
    index = torch.arange(300)
    one_block = cosine_knn(bank, bank, 5, index, backend="torch")
    shapes = []
    real_topk = torch.Tensor.topk
    def recording_topk(t, *args, **kwargs):
        shapes.append(tuple(t.shape))
        return real_topk(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", recording_topk)
    bounded = cosine_knn(bank, bank, 5, index, backend="torch", max_block_elements=300 * 7)
    assert shapes == [(7, 300)] * 42 + [(6, 300)]  # 7 queries x 300 bank rows per block, never more
    # same neighbours; similarities to rounding (BLAS may split other shapes otherwise)
    assert torch.equal(bounded[1], one_block[1]) and torch.allclose(bounded[0], one_block[0], atol=1e-6)
    assert knn.block_rows(10**6, 4096) == 268  # the default 1 GiB block at N = 1M: 268 queries
    assert knn.block_rows(10, 4096, max_elements=5) == 1


def test_cosine_knn_backend_choice_and_a_missing_faiss(monkeypatch):
    import sfda.pseudo_labels.knn as knn

    bank, few, many = torch.zeros(100, 4), torch.zeros(knn.FAISS_AUTO_MAX_QUERIES, 4), torch.zeros(64, 4)
    monkeypatch.setattr(knn, "faiss_available", lambda: True)
    assert knn.choose_backend("auto", few, bank) == "faiss"
    assert knn.choose_backend("auto", many, bank) == "torch"
    assert knn.choose_backend("torch", few, bank) == "torch"
    assert knn.choose_backend("faiss", many, bank) == "faiss"
    with pytest.raises(ValueError, match="expected one of auto, torch, faiss, got 'annoy'"):
        knn.choose_backend("annoy", few, bank)
    monkeypatch.setattr(knn, "faiss_available", lambda: False)
    assert knn.choose_backend("auto", few, bank) == "torch"
    with pytest.raises(ValueError, match=r"model.init_args.knn_backend: .*pip install -e '\.\[faiss\]'"):
        cosine_knn(few, torch.randn(100, 4), 3, backend="faiss")


@pytest.mark.parametrize("method", ["NRC", "AaD", "GLC"])
def test_a_faiss_knn_backend_without_faiss_is_refused_with_the_fix(workspace, monkeypatch, method):
    import sfda.pseudo_labels.knn as knn

    monkeypatch.setattr(knn, "faiss_available", lambda: False)
    model = {"class_path": f"sfda.methods.{method}",
             "init_args": {"source": str(workspace / "source.pt"), "knn_backend": "faiss"}}
    path = recipe(workspace / "method.yaml", model, folder_data(workspace / "target"))
    assert_refused(["fit", "--config", str(path)], workspace, "model.init_args.knn_backend",
                   "pip install -e '.[faiss]'")
