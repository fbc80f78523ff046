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


def check_momentum(momentum: float, field: str) -> float:
    """Refuse an EMA momentum outside (0, 1), naming the recipe ``field``."""
    if not 0.0 < momentum < 1.0:
        raise ValueError(f"{field}: expected an EMA momentum in (0, 1), got {momentum}")
    return momentum


def momentum_for_share(share: float, updates: int, field: str) -> float:
    """The EMA momentum ``m`` with ``m ** updates == share``: the share of the starting (source) weights
    the follower still holds after ``updates`` updates. A fixed 0.999 over 186 steps keeps 83% of them
    (0.999 ** 186); the official pose run's 15,000 steps keep 3e-7. Refuses a share outside (0, 1) or no
    updates, naming ``field``."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"{field}: expected the share of the source weights kept at the end in (0, 1), "
                         f"got {share}")
    if updates < 1:
        raise ValueError(f"{field}: the run makes {updates} EMA updates; a share needs at least one")
    return check_momentum(share ** (1.0 / updates), field)


class EMATeacher(nn.Module):
    """``teacher = momentum * teacher + (1 - momentum) * student`` after each ``update``.

    Floating-point buffers (BatchNorm statistics) are averaged the same way; integer
    buffers (``num_batches_tracked``) are copied. The teacher never receives gradients and
    is saved in checkpoints as a submodule of the method.

    Args:
        student: the network to follow; copied at construction.
        momentum: EMA decay in (0, 1).
        field: the recipe field it came from, named when it is refused.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999, field: str = "model.ema_momentum"):
        super().__init__()
        self.momentum = check_momentum(momentum, field)
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """Move the teacher towards ``student`` (call per step or per epoch)."""
        ema_update(self.model, student, self.momentum)

    def forward(self, *args, **kwargs):
        """Run the teacher network."""
        return self.model(*args, **kwargs)
