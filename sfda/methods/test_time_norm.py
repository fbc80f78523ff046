"""Test-time normalisation ("BN-1", Nado et al. 2020; with a source prior, Schneider et al., NeurIPS 2020):
every BatchNorm normalises each test batch with statistics estimated from that batch, mixed with the source
statistics; no gradient, no weight changes. An online method (a stream's batches); classification and
segmentation."""

from __future__ import annotations

import torch
from torch import nn

from ..models import SourceModel
from ..models.norm import batch_norms
from .source_only import SourceOnly


class PriorMixedStatistics:
    """A forward pre-hook on one BatchNorm in eval mode: before the layer normalises ``x (B, C, ...)`` its
    running statistics are set to ``(N * source + n * batch) / (N + n)`` (Schneider et al., eq. 4), ``n`` the
    batch's sample count and ``N`` the prior strength; ``N = 0`` is BN-1 (the batch's own statistics). The
    batch variance is the biased one BatchNorm normalises with in train mode. Under DDP the batch's sums are
    all-reduced first, so the statistics are the GLOBAL batch's, whatever the number of processes."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm, prior: float):
        self.prior = prior
        self.source_mean = layer.running_mean.detach().clone()
        self.source_var = layer.running_var.detach().clone()

    def __call__(self, layer, inputs) -> None:
        x = inputs[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.tensor([float(x.shape[0]), float(x.numel() // x.shape[1])], device=x.device)
        sums = torch.stack([x.sum(dim=dims), (x * x).sum(dim=dims)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(count)
        samples, values = count.tolist()
        mean = sums[0] / values
        var = sums[1] / values - mean * mean
        weight = samples / (self.prior + samples)
        layer.running_mean.copy_((1 - weight) * self.source_mean.to(x.device) + weight * mean)
        layer.running_var.copy_((1 - weight) * self.source_var.to(x.device) + weight * var.clamp_min(0))

    def restore(self, layer, inputs, output) -> None:
        """A forward hook: the source statistics back once the layer has normalised (the weights and
        statistics a checkpoint holds stay the source's)."""
        layer.running_mean.copy_(self.source_mean.to(layer.running_mean.device))
        layer.running_var.copy_(self.source_var.to(layer.running_var.device))


class TestTimeNorm(SourceOnly):
    """Each batch is normalised with its own statistics, mixed with the source's by ``prior`` (``N``); the
    prediction is the forward that uses them (predicted while normalising, as in both papers). Nothing is
    learned: the next batch starts again from the source statistics, so reset and continual settings give
    the same predictions, and the network's weights and statistics stay the source's. Online on a stream;
    ``sfda test`` / ``predict`` score each evaluation batch the same way, and offline ``sfda fit`` is refused
    (nothing to train). Refused for a network without BatchNorm.

    Args:
        source: see ``Adaptation``.
        prior: Schneider et al.'s ``N``: the source statistics count as this many samples. 0 (default) is BN-1
            (Nado et al.; the test-time-adaptation framework's "norm_test"); Schneider et al. found N = 16
            best for batches of 32-512 on ImageNet-C with ResNet-50 (their Fig. 2; N ~ n for small batches).
    """

    tasks = ("classification", "segmentation")
    __test__ = False  # a method, not a pytest test class

    def __init__(self, source: SourceModel, prior: float = 0.0):
        super().__init__(source, evaluate_source=False)
        if not prior >= 0:
            raise ValueError(f"model.prior: expected a prior strength N >= 0 (source samples), got {prior}")
        self.prior = prior
        self.norm_layers = batch_norms(self.network)
        if not self.norm_layers:
            raise ValueError(f"model.source: test-time normalisation re-estimates BatchNorm statistics, but "
                             f"the {self.task.name} network ({type(self.network).__name__}) has no BatchNorm "
                             "layer")
        for layer in self.norm_layers:
            mixing = PriorMixedStatistics(layer, prior)
            layer.register_forward_pre_hook(mixing)
            layer.register_forward_hook(mixing.restore)
        # the eval-mode forward of SourceOnly.adapt_step: BatchNorm reads the statistics the hooks set

    def normalises_with_the_batch(self) -> bool:
        return self.prior == 0  # with a prior, one image's statistics mix with the source's
