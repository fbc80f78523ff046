"""FeatureClassifier: any classifier ``nn.Module`` seen as (features, logits) for adaptation."""

from __future__ import annotations

import torch
from torch import nn

from .keyed_dropout import use_keyed_dropout


class FeatureClassifier(nn.Module):
    """Wraps a classifier and exposes the output of its layer ``feature_layer`` as the feature.

    ``forward(x) -> (features (B, D), logits (B, C))`` in one pass (a forward hook taps the
    feature). ``head_layer`` names the final classifier (frozen during hypothesis
    transfer); ``bottleneck_layers`` name modules trained at the full learning rate, the
    rest of the non-head parameters form the backbone group. The network's dropout modules
    become ``KeyedDropout``: given per-sample ``keys``, masks do not depend on the process count.

    Args:
        network: the classifier, ``network(x) -> logits``.
        feature_layer: dotted module name whose output is the feature (flattened); '' taps the INPUT of
            ``head_layer`` instead (a zoo model's pre-logits feature, ``sfda.models.zoo``).
        head_layer: dotted module name of the last classifier layer.
        bottleneck_layers: dotted module names of the bottleneck.
    """

    def __init__(self, network: nn.Module, feature_layer: str, head_layer: str,
                 bottleneck_layers: tuple[str, ...] = ()):
        super().__init__()
        self.network = network
        names = dict(network.named_modules())
        named = [("feature_layer", feature_layer or head_layer), ("head_layer", head_layer)]
        for field_name, layer in named + [("bottleneck_layers", b) for b in bottleneck_layers]:
            if layer not in names:
                raise ValueError(f"source.{field_name}: the network has no module '{layer}'; modules are "
                                 f"{sorted(n for n in names if n)}")
        self.feature_layer, self.head_layer = feature_layer, head_layer
        self.bottleneck_layers = tuple(bottleneck_layers)
        self._tapped: torch.Tensor | None = None
        if feature_layer:
            names[feature_layer].register_forward_hook(self._tap)
        else:
            names[head_layer].register_forward_pre_hook(self._tap_input)
        self._dropouts = use_keyed_dropout(network)

    def _tap(self, module, inputs, output):
        self._tapped = output

    def _tap_input(self, module, inputs):
        self._tapped = inputs[0]

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, ...)``; ``keys (B,)`` int64 from ``keyed_dropout.sample_keys`` key the dropout masks
        (training); None: ordinary dropout."""
        for dropout in self._dropouts:
            dropout.keys = keys
        try:
            logits = self.network(x)
        finally:
            for dropout in self._dropouts:
                dropout.keys = None
        features, self._tapped = self._tapped, None
        return features.flatten(1), logits

    @property
    def uses_dropout(self) -> bool:
        """Whether any dropout module can drop something (keys are then worth computing)."""
        return any(dropout.p > 0 for dropout in self._dropouts)

    @property
    def head(self) -> nn.Module:
        return self.network.get_submodule(self.head_layer)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"backbone", "bottleneck", "head"}`` -> parameters; every parameter in exactly one group."""
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "bottleneck": [], "head": []}
        for name, param in self.network.named_parameters():
            if name.startswith(self.head_layer + "."):
                groups["head"].append(param)
            elif any(name.startswith(b + ".") for b in self.bottleneck_layers):
                groups["bottleneck"].append(param)
            else:
                groups["backbone"].append(param)
        return groups
