"""LAME (Boudiaf et al., "Parameter-free Online Test-time Adaptation", CVPR 2022): the source model's class
probabilities of a batch corrected by a Laplacian-regularised maximum-likelihood assignment, so that each
sample's label agrees with its neighbours' in the batch; no parameter is updated. Online on a stream
(``sfda.data.stream``); ``sfda test`` / ``predict`` correct each evaluation batch the same way; offline
``sfda fit`` is refused (nothing trains). Classification. See docs/methods/lame.md."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..models import SourceModel
from ..pseudo_labels.distributed import gather_rows, world_size
from ..pseudo_labels.knn import cosine_knn
from .source_only import SourceOnly

Affinity = Literal["knn", "rbf", "linear"]
AFFINITIES = ("knn", "rbf", "linear")


def lame_affinity(features: torch.Tensor, kind: str, knn: int, keep: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """The ``(N, N)`` affinity of the L2-normalised ``features (N, D)``. ``knn``: ``W_ij = 1`` when j is one
    of the ``knn`` nearest OTHER samples of i (cosine = Euclidean order on normalised rows;
    ``min(knn, N - 1)`` in a small batch), not symmetric. ``rbf``: ``exp(-|x_i - x_j|^2 / (2 sigma^2))``,
    sigma the mean distance to each sample's ``knn``-th nearest other sample (the diagonal is 1, as
    officially). ``linear``: ``x_i . x_j``. Rows and columns of samples outside ``keep (N,)`` (a stream's
    unscored padding copies) are zero."""
    z = F.normalize(features.float(), dim=1)
    n = z.shape[0]
    k = min(knn, n - 1)
    if kind == "linear":
        kernel = z @ z.T
    elif k < 1:  # one sample: no neighbour
        kernel = z.new_zeros(n, n)
    elif kind == "knn":
        _, neighbours = cosine_knn(z, z, k, query_index=torch.arange(n, device=z.device), backend="torch")
        kernel = z.new_zeros(n, n).scatter_(1, neighbours, 1.0)
    else:
        dist = torch.cdist(z, z)
        others = dist + torch.diag(torch.full((n,), float("inf"), device=z.device))
        sigma = others.topk(k, dim=1, largest=False).values[:, -1].mean().clamp_min(1e-12)
        kernel = torch.exp(-dist.square() / (2 * sigma * sigma))
    if keep is not None:
        mask = keep.to(kernel.dtype)
        kernel = kernel * mask[:, None] * mask[None, :]
    return kernel


def laplacian_assignment(logits: torch.Tensor, kernel: torch.Tensor, weight: float = 1.0,
                         max_steps: int = 100, tolerance: float = 1e-8) -> tuple[torch.Tensor, int]:
    """LAME's assignment ``Z (N, C)`` and the iterations it took: from ``Z = softmax(logits)`` the bound
    optimiser's fixed-point update ``z_i <- softmax(log p_i + weight sum_j W_ij z_j)`` (paper Eq. 8), until
    the energy ``sum_i z_i . (log z_i - log p_i) - weight sum_ij W_ij z_i . z_j / 2`` changes by at most
    ``tolerance`` of its value (after at least 3 iterations, as officially) or ``max_steps``."""
    log_p = logits.float().log_softmax(dim=1)
    z = log_p.exp()
    kernel = kernel.to(z)
    previous = float("inf")
    for step in range(1, max_steps + 1):
        pairwise = weight * (kernel @ z)
        z = (log_p + pairwise).softmax(dim=1)
        energy = float((z * (z.clamp_min(1e-20).log() - log_p)).sum() - 0.5 * (pairwise * z).sum())
        if step > 2 and abs(energy - previous) <= tolerance * abs(previous):
            break
        previous = energy
    return z, step


class LAME(SourceOnly):
    """The batch is passed through the source model in eval mode (source BatchNorm statistics, as the
    official ``configure_model``); its features give the affinity ``W`` (``lame_affinity``) and its
    probabilities the unary term, and the prediction is the assignment ``Z`` (``laplacian_assignment``),
    returned as the logits ``log Z``: the batch is predicted WHILE it is corrected, and nothing is learned
    (the network's weights and statistics stay the source's; no optimiser). So reset and continual
    settings give the same predictions. The assignment is over the GLOBAL batch (features and logits
    gathered from every process, each keeping its rows), so it does not depend on the process count; a
    stream's unscored padding copies are nobody's neighbour.

    A batch of one image has no neighbour: on a stream ``data.batch_size`` 1 is refused; at evaluation a
    last batch of one keeps its source prediction.

    Args:
        source: see ``Adaptation``.
        affinity: ``rbf`` (default: official LAME's default and its tuned "overall best" configuration, and
            the test-time-adaptation framework's), ``knn`` or ``linear`` (the official tuning grid).
        knn: neighbours of the kNN affinity, or the neighbour whose distance sets the rbf's sigma (official
            and framework: 5).
        force_symmetry: use ``(W + W^T) / 2`` (official and framework default: false).
        max_steps: at most this many fixed-point iterations (official: 100).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, affinity: Affinity = "rbf", knn: int = 5,
                 force_symmetry: bool = False, max_steps: int = 100):
        super().__init__(source, evaluate_source=False)
        if affinity not in AFFINITIES:
            raise ValueError(f"model.affinity: expected one of {', '.join(AFFINITIES)}, got {affinity!r}")
        if not knn >= 1:
            raise ValueError(f"model.knn: expected a neighbour count >= 1, got {knn}")
        if not max_steps >= 1:
            raise ValueError(f"model.max_steps: expected an iteration count >= 1, got {max_steps}")
        self.affinity = affinity
        self.knn = knn
        self.force_symmetry = force_symmetry
        self.max_steps = max_steps

    def start_stream(self, datamodule) -> None:
        if datamodule.batch_size < 2:
            raise ValueError(f"data.batch_size: {type(self).__name__} regularises each prediction with its "
                             "neighbours in the batch, which one image does not have; expected at least 2, "
                             f"got {datamodule.batch_size}")
        super().start_stream(datamodule)

    def correct(self, features: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``log Z`` for this process's rows, the assignment solved over the global batch."""
        rows = features.shape[0]
        keep = torch.ones(rows, dtype=torch.bool, device=features.device) if keep is None else keep
        if world_size() > 1:
            counts = gather_rows(torch.tensor([rows], device=features.device))
            start = int(counts[:torch.distributed.get_rank()].sum())
            features, logits = gather_rows(features), gather_rows(logits)
            keep = gather_rows(keep.float()) > 0
        else:
            start = 0
        kernel = lame_affinity(features, self.affinity, self.knn, keep)
        if self.force_symmetry:
            kernel = (kernel + kernel.T) / 2
        z, steps = laplacian_assignment(logits, kernel, max_steps=self.max_steps)
        self.last_steps = steps
        return z[start:start + rows].clamp_min(1e-30).log().to(logits.dtype)

    def forward(self, images: torch.Tensor, index: torch.Tensor | None = None,
                keep: torch.Tensor | None = None):
        """``(features, log Z)``: the source model's features and LAME's corrected assignment."""
        features, logits = super().forward(images, index)
        with torch.no_grad():
            return features, self.correct(features, logits, keep)

    def adapt_step(self, batch: dict):
        """Predicted while correcting: the prediction is the batch's assignment (see the class)."""
        if self.stream is None:
            return super().adapt_step(batch)  # refused: nothing trains offline
        self.network.eval()
        with torch.no_grad():
            return None, self(batch["image"], None, batch["weight"] > 0)
