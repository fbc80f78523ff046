"""EMA teacher: an exponential moving average copy of a network, parameters and buffers."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def ema_update(follower: nn.Module, leader: nn.Module, momentum: float, buffers: bool = True) -> None:
    """``follower = momentum * follower + (1 - momentum) * leader``, in place: the parameters and, with
    ``buffers``, floating-point buffers (integer buffers are copied). ``follower`` may be a network that
    also trains (pose SFDA's intermediate network follows its target network)."""
    for f, lead in zip(follower.parameters(), leader.parameters(), strict=True):
        f.lerp_(lead.detach(), 1.0 - momentum)
    if not buffers:
        return
    for f, lead in zip(follower.buffers(), leader.buffers(), strict=True):
        if f.dtype.is_floating_point:
            f.lerp_(lead.detach(), 1.0 - momentum)
        else:
            f.copy_(lead)


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
        ema_update(self.model, student, self.momentum)

    def forward(self, *args, **kwargs):
        """Run the teacher network."""
        return self.model(*args, **kwargs)
