"""EMA teacher: an exponential moving average copy of a network, parameters and buffers."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher(nn.Module):
    """``teacher = momentum * teacher + (1 - momentum) * student`` after each ``update``.

    Floating-point buffers (BatchNorm statistics) are averaged the same way; integer
    buffers (``num_batches_tracked``) are copied. The teacher never receives gradients and
    is saved in checkpoints as a submodule of the method.

    Args:
        student: the network to follow; copied at construction.
        momentum: EMA decay in [0, 1).
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMATeacher: momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """Move the teacher towards ``student`` (call per step or per epoch)."""
        for t, s in zip(self.model.parameters(), student.parameters(), strict=True):
            t.lerp_(s.detach(), 1.0 - self.momentum)
        for t, s in zip(self.model.buffers(), student.buffers(), strict=True):
            if t.dtype.is_floating_point:
                t.lerp_(s.detach(), 1.0 - self.momentum)
            else:
                t.copy_(s)

    def forward(self, *args, **kwargs):
        """Run the teacher network."""
        return self.model(*args, **kwargs)
