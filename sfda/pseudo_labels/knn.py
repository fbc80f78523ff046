"""Cosine k-nearest neighbours against a bank: torch in bounded-memory blocks, or faiss.

``cosine_knn(..., backend="auto")`` picks faiss where it is installed and measured faster on CPU
tensors, torch otherwise; a recipe forces either with ``model.init_args.knn_backend``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

KnnBackend = Literal["auto", "torch", "faiss"]
BACKENDS = ("auto", "torch", "faiss")

# At most this many similarities in one block (2^28 = 1 GiB of float32): the torch path takes
# min(chunk_size, BLOCK_ELEMENTS // N) queries at a time, so its peak memory is the normalised bank
# plus one fixed-size block whatever N (at N = 1M: 268 queries per block).
BLOCK_ELEMENTS = 1 << 28

# "auto" takes faiss only for problems of at most this many queries (and CPU tensors), as measured by
# benchmarks/engine_scaling.py (rows "knn-crossover", "knn-block", "knn-graph" in its results JSON; 1 thread,
# torch 2.14 on MKL vs faiss-cpu 1.15.1, banks of 10k to 1M rows x 256). Time ratio torch / faiss: one query
# 0.99-1.23 (faiss ahead at 4 of 5 bank sizes), 2 queries 0.90-0.96, 4: 0.77-1.02, 8: 0.64-0.84, the
# 64-query steps of NRC/AaD 0.20-0.31, their 320 expanded queries 0.10-0.21, 8192-query blocks 0.36-0.45,
# whole self-graphs (10k-100k) 0.34-0.40. So torch from 2 queries on.
FAISS_AUTO_MAX_QUERIES = 1

FAISS_MISSING = ("model.init_args.knn_backend: 'faiss' asks for faiss, which is not installed; "
                 "install it with pip install -e '.[faiss]', or set knn_backend: auto (or torch)")


def block_rows(columns: int, upper: int, max_elements: int = BLOCK_ELEMENTS) -> int:
    """Rows per ``rows x columns`` block: at most ``upper`` and ``max_elements // columns``, at least 1."""
    return max(1, min(upper, max_elements // max(1, columns)))


def faiss_available() -> bool:
    """Whether the optional faiss package imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def check_knn_backend(backend: str) -> str:
    """``backend`` if it can run here; a ValueError naming ``model.init_args.knn_backend`` otherwise."""
    if backend not in BACKENDS:
        choices = ", ".join(BACKENDS)
        raise ValueError(f"model.init_args.knn_backend: expected one of {choices}, got {backend!r}")
    if backend == "faiss" and not faiss_available():
        raise ValueError(FAISS_MISSING)
    return backend


def choose_backend(backend: str, queries: torch.Tensor, bank: torch.Tensor) -> str:
    """The backend ``cosine_knn`` runs: ``backend`` unless it is "auto" (see FAISS_AUTO_MAX_QUERIES)."""
    if check_knn_backend(backend) != "auto":
        return backend
    on_cpu = queries.device.type == "cpu" and bank.device.type == "cpu"
    small = queries.shape[0] <= FAISS_AUTO_MAX_QUERIES
    return "faiss" if on_cpu and small and faiss_available() else "torch"


def _check_k(k: int, bank: torch.Tensor, query_index: torch.Tensor | None) -> None:
    limit = bank.shape[0] - (1 if query_index is not None else 0)
    if not 0 < k <= limit:
        raise ValueError(f"cosine_knn: k must be in [1, {limit}] for a bank of {bank.shape[0]} rows, got {k}")


def cosine_knn(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    query_index: torch.Tensor | None = None,
    chunk_size: int = 4096,
    backend: KnnBackend = "auto",
    max_block_elements: int = BLOCK_ELEMENTS,
    normalised: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` bank rows most cosine-similar to each query, most similar first.

    Args:
        queries: ``(B, D)``.
        bank: ``(N, D)``.
        k: neighbours per query (``k <= N - 1`` when excluding self).
        query_index: ``(B,)`` bank row of each query, excluded from its own neighbours
            ("self excluded"); None to keep every row.
        chunk_size: at most this many queries per similarity block.
        backend: "torch", "faiss" (:func:`cosine_knn_faiss`) or "auto" (faiss where installed and
            measured faster: a single query on CPU tensors; torch otherwise). Both give the same
            neighbours, ties aside.
        max_block_elements: at most this many similarities per torch block (1 GiB of float32 by
            default), so memory is bounded at ``N x D`` for the normalised bank plus one block.
        normalised: the caller's rows (queries and bank) are already unit length, as a bank of
            normalised features keeps them: the torch path uses them as they are instead of normalising
            a copy of the whole bank at every call (a 60k x 256 bank: 61 MB written per call).

    Returns:
        similarities ``(B, k)`` and bank indices ``(B, k)``.
    """
    _check_k(k, bank, query_index)
    if choose_backend(backend, queries, bank) == "faiss":
        return cosine_knn_faiss(queries, bank, k, query_index)
    rows_per_block = block_rows(bank.shape[0], chunk_size, max_block_elements)
    unit = (lambda rows: rows.float()) if normalised else (lambda rows: F.normalize(rows.float(), dim=1))
    bank_n = unit(bank)
    sims_out, idx_out = [], []
    for start in range(0, queries.shape[0], rows_per_block):
        q = unit(queries[start : start + rows_per_block])
        sims = q @ bank_n.T
        if query_index is not None:
            rows = torch.arange(q.shape[0], device=sims.device)
            sims[rows, query_index[start : start + rows_per_block].to(sims.device).long()] = -float("inf")
        top = sims.topk(k, dim=1)
        del sims  # free the block before the next one is allocated
        sims_out.append(top.values)
        idx_out.append(top.indices)
    return torch.cat(sims_out), torch.cat(idx_out)


def cosine_knn_faiss(
    queries: torch.Tensor, bank: torch.Tensor, k: int, query_index: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`cosine_knn`, through faiss's exact inner-product search on normalised rows
    (``faiss.knn``: blocked internally, no index copy of the bank)."""
    try:
        import faiss
    except ImportError as err:
        raise ValueError(FAISS_MISSING) from err
    _check_k(k, bank, query_index)
    bank_n = np.ascontiguousarray(F.normalize(bank.float(), dim=1).cpu().numpy())
    q = np.ascontiguousarray(F.normalize(queries.float(), dim=1).cpu().numpy())
    extra = 1 if query_index is not None else 0
    sims, idx = faiss.knn(q, bank_n, k + extra, metric=faiss.METRIC_INNER_PRODUCT)
    sims, idx = torch.from_numpy(sims), torch.from_numpy(idx)
    if query_index is not None:
        keep = idx != query_index.cpu().long()[:, None]
        # drop self where found, else drop the last (least similar) column
        keep[keep.all(dim=1), -1] = False
        sims, idx = sims[keep].view(-1, k), idx[keep].view(-1, k)
    return sims.to(queries.device), idx.to(queries.device)
