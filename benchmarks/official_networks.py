"""The official SHOT digit networks as ONE module that ``sfda fit`` can load by name (benchmarks only).

``OfficialDTN``: ``DTNBase -> feat_bottleneck(type='bn') -> feat_classifier(type='wn')`` of the official
``digit/network.py`` (tim-learn/SHOT), imported from the checkout named by the environment variable
``SHOT_DIGIT_DIR``, so both sides of ``official_shot_process.py --case dtn`` run the same code (the head's
weight norm as a parametrization: the same function, keys ``fc.parametrizations.weight.original0/1`` for the
official ``fc.weight_g`` / ``fc.weight_v``).
"""

from __future__ import annotations

import importlib
import os
import sys

import torch
from torch import nn


def official_network_module():
    """The official ``network`` module of the checkout at ``SHOT_DIGIT_DIR``."""
    folder = os.environ.get("SHOT_DIGIT_DIR")
    if not folder:
        raise RuntimeError("SHOT_DIGIT_DIR: set it to the official checkout's digit folder")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("network")


class OfficialDTN(nn.Module):
    """``(B, 3, 32, 32) -> logits (B, 10)``; ``netB`` gives the 256-d feature, ``netC`` is the head."""

    def __init__(self):
        super().__init__()
        network = official_network_module()
        self.netF = network.DTNBase()
        self.netB = network.feat_bottleneck(type="bn", feature_dim=self.netF.in_features, bottleneck_dim=256)
        self.netC = network.feat_classifier(type="wn", class_num=10, bottleneck_dim=256)
        # the official head uses torch.nn.utils.weight_norm (a forward hook), whose computed weight cannot be
        # deep-copied as sfda copies networks: the same g * v / |v| as a parametrization instead
        torch.nn.utils.remove_weight_norm(self.netC.fc)
        torch.nn.utils.parametrizations.weight_norm(self.netC.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.netC(self.netB(self.netF(x)))
