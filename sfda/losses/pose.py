"""Heatmap pose losses: SimpleBaseline's JointsMSE and pose SFDA's source-protect and target-relevant
losses (Peng et al. ICCV 2023; ``docs/methods/pose_sfda.md``). Heatmaps are ``(B, K, h, w)``.

``temperature`` divides the heatmaps before every softmax. Raw MSE heatmaps lie in [0, 1], so the
faithful temperature 1 gives nearly uniform distributions over h x w positions (the spec's note): the
distribution losses are then small and flat. It is exposed, defaulting to the faithful 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASKED_LOGIT = -1e4  # softmax weight exp(-1e4) = 0 in float32


def joints_mse(predicted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """0.5 x the mean squared error over ``(B, K, h, w)``, joints weighted by ``weight (B, K)`` (0: not
    labelled), SimpleBaseline's ``JointsMSELoss``."""
    w = weight[:, :, None, None].to(predicted.dtype)
    return 0.5 * ((predicted * w - target * w) ** 2).mean()


def residual_kl(source: torch.Tensor, intermediate: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """L_res: per image and joint, the positions of both heatmaps' peaks masked out, softmax over the
    remaining ``h w - 1`` or ``- 2`` positions, ``KL(p_I || p_S)``; mean over images and joints."""
    s, i = source.flatten(2).float() / temperature, intermediate.flatten(2).float() / temperature
    peaks = torch.zeros_like(s, dtype=torch.bool)
    peaks.scatter_(2, s.argmax(dim=2, keepdim=True), True)
    peaks.scatter_(2, i.argmax(dim=2, keepdim=True), True)
    # a large finite logit, not -inf: (-inf) - (-inf) would put NaN into the gradient of masked positions
    log_s = s.masked_fill(peaks, MASKED_LOGIT).log_softmax(dim=2)
    log_i = i.masked_fill(peaks, MASKED_LOGIT).log_softmax(dim=2)
    kl = (log_i.exp() * (log_i - log_s)).masked_fill(peaks, 0.0).sum(dim=2)
    return kl.mean()


def spatial_probabilities(
    heatmaps: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spatial probability space: ``P^y (B, K, h)`` = softmax over rows of the mean over columns, and
    ``P^x (B, K, w)`` = softmax over columns of the mean over rows."""
    h = heatmaps.float() / temperature
    return h.mean(dim=3).softmax(dim=2), h.mean(dim=2).softmax(dim=2)


def joint_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, K, n), (B, K, n) -> (B, K, K)``: cosine of every joint of ``a`` with every joint of ``b``."""
    return F.normalize(a, dim=2) @ F.normalize(b, dim=2).transpose(1, 2)


def pose_contrastive(
    intermediate: torch.Tensor, target: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """L_PC: per image b, ``s_b(i, j) = (cos(P^y_i(H_I), P^y_j(H_T)) + cos(P^x_i(H_I), P^x_j(H_T))) / 2``
    over joint pairs; ``-mean_{b,k} log(s_b(k, k) / sum_{i,j} s_b(i, j))``."""
    yi, xi = spatial_probabilities(intermediate, temperature)
    yt, xt = spatial_probabilities(target, temperature)
    similarity = (joint_cosines(yi, yt) + joint_cosines(xi, xt)) / 2
    diagonal = similarity.diagonal(dim1=1, dim2=2)  # (B, K)
    return -(diagonal / similarity.sum(dim=(1, 2))[:, None]).log().mean()


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy over the last dimension."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=-1)


def heatmap_im(
    heatmaps: torch.Tensor, temperature: float = 1.0, batch_mean: torch.Tensor | None = None
) -> torch.Tensor:
    """L_IM on the target network's heatmaps: ``(mean H(P^y) + mean H(P^x) - mean_k H(softmax over h w of
    the batch-mean heatmap k)) / (h w)``: confident spatial marginals, diverse joints over the batch.
    ``batch_mean (K, h, w)``: the mean heatmap of the GLOBAL batch under DDP (default: of ``heatmaps``)."""
    height, width = heatmaps.shape[-2:]
    py, px = spatial_probabilities(heatmaps, temperature)
    mean = heatmaps.float().mean(dim=0) if batch_mean is None else batch_mean.float()
    diverse = (mean / temperature).flatten(1).softmax(dim=1)  # (K, h w)
    return (entropy(py).mean() + entropy(px).mean() - entropy(diverse).mean()) / (height * width)
