"""Cosine k-nearest neighbours against a bank (torch; faiss when installed and asked for)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_knn(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    query_index: torch.Tensor | None = None,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` bank rows most cosine-similar to each query, most similar first.

    Args:
        queries: ``(B, D)``.
        bank: ``(N, D)``.
        k: neighbours per query (``k <= N - 1`` when excluding self).
        query_index: ``(B,)`` bank row of each query, excluded from its own neighbours
            ("self excluded"); None to keep every row.
        chunk_size: queries per similarity block, bounding memory at ``chunk_size x N``.

    Returns:
        similarities ``(B, k)`` and bank indices ``(B, k)``.
    """
    limit = bank.shape[0] - (1 if query_index is not None else 0)
    if not 0 < k <= limit:
        raise ValueError(f"cosine_knn: k must be in [1, {limit}] for a bank of {bank.shape[0]} rows, got {k}")
    bank_n = F.normalize(bank.float(), dim=1)
    sims_out, idx_out = [], []
    for start in range(0, queries.shape[0], chunk_size):
        q = F.normalize(queries[start : start + chunk_size].float(), dim=1)
        sims = q @ bank_n.T
        if query_index is not None:
            rows = torch.arange(q.shape[0], device=sims.device)
            sims[rows, query_index[start : start + chunk_size].to(sims.device).long()] = -float("inf")
        top = sims.topk(k, dim=1)
        sims_out.append(top.values)
        idx_out.append(top.indices)
    return torch.cat(sims_out), torch.cat(idx_out)


def faiss_available() -> bool:
    """Whether the optional faiss package imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def cosine_knn_faiss(queries: torch.Tensor, bank: torch.Tensor, k: int,
                     query_index: torch.Tensor | None = None):
    """Same contract as :func:`cosine_knn`, through a faiss inner-product index on normalised rows."""
    import faiss

    bank_n = F.normalize(bank.float(), dim=1).cpu().numpy()
    q = F.normalize(queries.float(), dim=1).cpu().numpy()
    index = faiss.IndexFlatIP(bank_n.shape[1])
    index.add(bank_n)
    extra = 1 if query_index is not None else 0
    sims, idx = index.search(q, k + extra)
    sims, idx = torch.from_numpy(sims), torch.from_numpy(idx)
    if query_index is not None:
        keep = idx != query_index.cpu().long()[:, None]
        # drop self where found, else drop the last (least similar) column
        keep[keep.all(dim=1), -1] = False
        sims, idx = sims[keep].view(-1, k), idx[keep].view(-1, k)
    return sims.to(queries.device), idx.to(queries.device)
