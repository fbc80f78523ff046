"""Networks as a serving stack runs them (``sfda export``): tensors in, tensors out, eval mode.

- ``ClassifierLogits``: a ``FeatureClassifier`` reduced to ``images (B, C, S, S) -> logits (B, K)``;
- ``OneImageDetections``: a torchvision detector on one image, its post-processing kept:
  ``image (1, 3, S, S) -> boxes (n, 4), labels (n,), scores (n,)``;
- ``with_explicit_batch_statistics``: a copy whose BatchNorm layers that normalise with each batch's own
  statistics (Tent) compute them as plain reductions, which every exporter can write.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ClassifierLogits(nn.Module):
    """``images (B, C, S, S) -> logits (B, K)`` of a ``FeatureClassifier`` (its feature dropped)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    @property
    def plain_network(self) -> nn.Module:
        """The user's classifier itself (its own state-dict keys)."""
        return self.classifier.network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)[1]


class OneImageDetections(nn.Module):
    """``image (1, 3, S, S)`` in [0, 1] -> ``boxes (n, 4)`` (x1, y1, x2, y2 in input pixels), ``labels
    (n,)`` (0-based class index, background excluded) and ``scores (n,)``: torchvision's detector with its
    own normalisation, NMS and score threshold."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    @property
    def plain_network(self) -> nn.Module:
        """The torchvision detector itself."""
        return self.detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        detections = self.detector([image[0]])[0]
        return detections["boxes"], detections["labels"] - 1, detections["scores"]


class BatchStatisticsNorm(nn.Module):
    """BatchNorm that always normalises with the statistics of the batch it is given (biased variance,
    as ``F.batch_norm`` in training mode), written as reductions so that ONNX and TorchScript keep it."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.eps = norm.eps
        self.weight = norm.weight
        self.bias = norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = (x - mean).pow(2).mean(dim=dims, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def uses_batch_statistics(norm: nn.Module) -> bool:
    """Whether ``norm`` is a BatchNorm that normalises with each batch's statistics in eval mode."""
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_mean is None


def with_explicit_batch_statistics(network: nn.Module) -> nn.Module:
    """``network`` itself when none of its BatchNorm layers uses batch statistics in eval mode; else a copy
    where those layers are ``BatchStatisticsNorm`` (same outputs)."""
    if not any(uses_batch_statistics(m) for m in network.modules()):
        return network
    network = copy.deepcopy(network)
    for name, module in list(network.named_modules()):
        if uses_batch_statistics(module):
            parent, _, child = name.rpartition(".")
            setattr(network.get_submodule(parent) if parent else network, child, BatchStatisticsNorm(module))
    return network
