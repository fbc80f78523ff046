"""Unit tests of the pseudo-label engine against brute-force references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

from sfda.pseudo_labels import (
    EMATeacher,
    TargetBank,
    centroid_labels,
    class_balanced_mask,
    confidence_mask,
    cosine_knn,
    estimated_prior,
    gather_rows,
    kmeans,
    normalised_entropy,
    unknown_by_entropy_2means,
)


def test_bank_writes_rows_by_global_index_and_tracks_fill():
    bank = TargetBank(6, {"features": 3, "scores": 2})
    bank.write(torch.tensor([4, 1]), features=torch.ones(2, 3), scores=torch.tensor([[0.2, 0.8], [0.6, 0.4]]))
    assert torch.equal(bank.read("scores", torch.tensor([1, 4])), torch.tensor([[0.6, 0.4], [0.2, 0.8]]))
    assert bank.filled.tolist() == [False, True, False, False, True, False] and not bank.is_full()
    assert "features" in bank.state_dict() and bank.state_dict()["features"].shape == (6, 3)
    with pytest.raises(KeyError, match="no field"):
        bank.write(torch.tensor([0]), logits=torch.zeros(1, 2))


def test_gather_rows_is_identity_on_one_process():
    x = torch.arange(6.0).view(3, 2)
    assert torch.equal(gather_rows(x), x)


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
    assert torch.equal(bounded[1], one_block[1]) and torch.equal(bounded[0], one_block[0])
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


def shot_reference(features: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The official SHOT obtain_label in numpy (distance 'cosine', threshold 0, one extra round)."""
    fea = np.concatenate([features, np.ones((len(features), 1))], 1)
    fea = fea / np.linalg.norm(fea, axis=1, keepdims=True)
    k = probs.shape[1]
    aff = probs
    initc = aff.T @ fea / (1e-8 + aff.sum(0)[:, None])
    labelset = np.where(np.eye(k)[probs.argmax(1)].sum(0) > 0)[0]
    pred = labelset[cdist(fea, initc[labelset], "cosine").argmin(1)]
    aff = np.eye(k)[pred]
    initc = aff.T @ fea / (1e-8 + aff.sum(0)[:, None])
    return labelset[cdist(fea, initc[labelset], "cosine").argmin(1)]


def test_centroid_labels_match_official_shot_procedure():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 10, generator=gen) * 3
    truth = torch.randint(0, 4, (400,), generator=gen)
    features = centres[truth] + torch.randn(400, 10, generator=gen)
    logits = torch.randn(400, 5, generator=gen)  # class 4 never argmax after masking below
    logits[:, :4] += F.one_hot(truth, 4) * 1.0
    logits[:, 4] -= 10
    probs = logits.softmax(1)
    ours = centroid_labels(features, probs).numpy()
    assert np.array_equal(ours, shot_reference(features.double().numpy(), probs.double().numpy()))
    assert (ours != 4).all()  # a class with no argmax gets no samples
    # clustering corrects labels
    assert (ours == truth.numpy()).mean() > (probs.argmax(1) == truth).float().mean().item()


def test_kmeans_recovers_separated_clusters_deterministically():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(50, 2, generator=gen) for c in centres])
    c1, l1 = kmeans(x, 3, seed=7)
    c2, l2 = kmeans(x, 3, seed=7)
    assert torch.equal(l1, l2)
    for block in range(3):  # every true cluster lands in one k-means cluster
        assert l1[block * 50 : (block + 1) * 50].unique().numel() == 1
    with pytest.raises(ValueError, match="k="):
        kmeans(x, 500)


def test_selection_rules():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8]])
    assert confidence_mask(probs, 0.7).tolist() == [True, False, False, True]
    assert torch.allclose(normalised_entropy(probs)[1], torch.tensor(1.0), atol=1e-4)
    # class 0 holds rows 0-2 (row 1 ties to 0): ceil(0.5 * 3) = 2 most confident kept; class 1: row 3
    assert class_balanced_mask(probs, 0.5).tolist() == [True, False, True, True]
    unknown = unknown_by_entropy_2means(torch.tensor([[0.99, 0.01]] * 5 + [[0.5, 0.5]] * 3))
    assert unknown.tolist() == [False] * 5 + [True] * 3


def test_ema_teacher_averages_parameters_and_buffers():
    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    teacher = EMATeacher(student, momentum=0.5)
    before = teacher.model[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(2.0)
        student[1].running_mean.fill_(4.0)
    teacher.update(student)
    assert torch.allclose(teacher.model[0].weight, before + 1.0)
    assert torch.allclose(teacher.model[1].running_mean, torch.full((2,), 2.0))
    assert not any(p.requires_grad for p in teacher.parameters())


def test_estimated_prior_is_a_distribution_from_argmax_counts():
    probs = torch.tensor([[0.9, 0.1, 0.0]] * 3 + [[0.1, 0.9, 0.0]])
    prior = estimated_prior(probs)
    assert math.isclose(prior.sum().item(), 1.0, rel_tol=1e-6) and prior[0] > prior[1] > prior[2] > 0


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


@pytest.mark.ddp
def test_autograd_collectives_on_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    """GlobalBatchNorm, gather_with_grad (the global marginal of IM / AaD) and the target pass under 2 gloo
    processes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).parent / "collectives_worker.py"
    done = subprocess.run([sys.executable, str(worker), "29547", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["ok", "ok"]
