"""Dropout whose masks depend only on (run seed, global step, layer, GLOBAL sample index).

Ordinary dropout draws its masks from each process's random stream, so a sample is dropped
differently on 1 or N processes and the training trajectory depends on the process count.
Here every mask element comes from a counter-based hash (splitmix64) of the sample's key and
its position, on the sample's own device: the same sample at the same step gets the same mask
however the global batch is split between processes, and after a resume.
"""

from __future__ import annotations

import torch
from torch import nn

_GAMMA = 0x9E3779B97F4A7C15 - 2**64  # splitmix64 constants as signed int64 (torch arithmetic wraps)
_MUL1 = 0xBF58476D1CE4E5B9 - 2**64
_MUL2 = 0x94D049BB133111EB - 2**64


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 ``x`` (``>>`` is arithmetic on signed tensors)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 of int64 ``x`` (elementwise, wrapping arithmetic): consecutive inputs give
    statistically independent 64-bit outputs."""
    x = x + _GAMMA
    x = (x ^ _shift_right(x, 30)) * _MUL1
    x = (x ^ _shift_right(x, 27)) * _MUL2
    return x ^ _shift_right(x, 31)


def sample_keys(index: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """``(B,)`` int64 dropout keys of global sample ``index (B,)`` at training ``step`` of a run seeded
    ``seed``."""
    salt = mix64(torch.tensor([seed * 1_000_003 + step], dtype=torch.int64, device=index.device))
    return mix64(index.long() ^ salt)


def keyed_uniform(keys: torch.Tensor, shape: tuple[int, ...], layer: int) -> torch.Tensor:
    """``(B, *shape)`` float32 uniforms in [0, 1): element j of row b is a hash of (keys[b], layer, j)."""
    per_sample = 1
    for size in shape:
        per_sample *= size
    base = mix64(keys ^ mix64(torch.tensor([layer], dtype=torch.int64, device=keys.device)))
    counters = base[:, None] + torch.arange(per_sample, dtype=torch.int64, device=keys.device)[None]
    top24 = _shift_right(mix64(counters), 40)
    return (top24.float() / 2**24).view(keys.shape[0], *shape)


class KeyedDropout(nn.Module):
    """Drop-in for ``nn.Dropout`` / ``nn.Dropout1d-3d`` (``channelwise``: one draw per channel).
    With ``keys (B,)`` set (see ``FeatureClassifier.forward``) the mask of row b is
    ``keyed_uniform(keys[b]) >= p``; without keys (e.g. a mixup batch) it is ordinary dropout."""

    def __init__(self, p: float, channelwise: bool, layer: int):
        super().__init__()
        self.p, self.channelwise, self.layer = p, channelwise, layer
        self.keys: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        shape = (x.shape[1], *[1] * (x.dim() - 2)) if self.channelwise else tuple(x.shape[1:])
        if self.keys is None or self.keys.shape[0] != x.shape[0]:
            uniform = torch.rand(x.shape[0], *shape, device=x.device)
        else:
            uniform = keyed_uniform(self.keys, shape, self.layer)
        return x * (uniform >= self.p).to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, channelwise={self.channelwise}, layer={self.layer}"


def use_keyed_dropout(network: nn.Module) -> list[KeyedDropout]:
    """Replace every dropout module of ``network`` in place by a ``KeyedDropout`` with the same
    rate (layers numbered in module order); returns them. Dropout has no state, so weights and
    checkpoints are unchanged."""
    replaced: list[KeyedDropout] = []
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.dropout._DropoutNd) \
                    and not isinstance(child, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
                keyed = KeyedDropout(child.p, channelwise=not isinstance(child, nn.Dropout),
                                     layer=len(replaced))
                setattr(parent, name, keyed)
                replaced.append(keyed)
    return replaced


def dropout_off(network: nn.Module) -> int:
    """Put every dropout layer of ``network`` (``KeyedDropout`` or torch's) in eval mode, leaving the other
    layers' modes as they are; returns how many there were."""
    layers = [m for m in network.modules() if isinstance(m, (KeyedDropout, nn.modules.dropout._DropoutNd))]
    for layer in layers:
        layer.eval()
    return len(layers)
