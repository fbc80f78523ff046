"""Optimiser settings and schedule shared by every method, and the finite-loss guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch


@dataclass
class Optim:
    """Optimiser and schedule (SHOT family defaults).

    Args:
        name: 'sgd' (momentum, nesterov) or 'adam'.
        lr: base learning rate (bottleneck and other non-backbone groups).
        backbone_lr_mult: backbone lr = this x lr (spec: 0.1).
        momentum, nesterov, weight_decay: SGD settings.
        gamma, power: per-step decay lr_t = lr (1 + gamma t / T)^-power (T = total steps); power 0 = constant.
        step_epochs, step_factor: when step_epochs > 0, instead multiply lr by step_factor every
            step_epochs epochs (the segmentation papers' schedule: x0.9 every 20 epochs).
        milestones: when given, instead multiply lr by step_factor at each of these epochs (pose SFDA's
            target network: x0.1 at 45 and 60).
    """

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    backbone_lr_mult: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-3
    gamma: float = 10.0
    power: float = 0.75
    step_epochs: int = 0
    step_factor: float = 0.9
    milestones: tuple[int, ...] = ()

    def __post_init__(self):
        rules = {
            "lr": (self.lr > 0, "> 0"),
            "backbone_lr_mult": (self.backbone_lr_mult >= 0, ">= 0"),
            "momentum": (0 <= self.momentum < 1, "in [0, 1)"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "gamma": (self.gamma >= 0, ">= 0"),
            "power": (self.power >= 0, ">= 0"),
            "step_epochs": (self.step_epochs >= 0, ">= 0"),
            "step_factor": (self.step_factor > 0, "> 0"),
            "milestones": (all(m > 0 for m in self.milestones)
                           and list(self.milestones) == sorted(self.milestones),
                           "increasing positive epochs"),
        }
        for name, (ok, expected) in rules.items():
            if not ok:
                raise ValueError(f"model.optim.{name}: expected {expected}, got {getattr(self, name)}")


def build_optimizer(module: L.LightningModule, groups: list[dict], o: Optim, total_steps=None) -> dict:
    """Optimiser and per-step (poly) or per-epoch (step) schedule over parameter ``groups``.
    ``total_steps``: a callable giving T of the poly schedule when it is known only later
    (active rounds); default: the trainer's estimate for the whole run."""
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"{type(module).__name__}: no trainable parameters; nothing to optimise")
    if o.name == "sgd":
        optimizer = torch.optim.SGD(
            groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.milestones:
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(o.milestones), o.step_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
    if o.step_epochs > 0:
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, o.step_epochs, o.step_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
    if total_steps is None:
        total = max(1, int(module.trainer.estimated_stepping_batches))
        total_steps = lambda: total  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: (1 + o.gamma * t / max(1, total_steps())) ** (-o.power)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def check_finite(module: L.LightningModule, loss: torch.Tensor) -> None:
    """Stop a run whose loss is NaN or infinite, naming epoch and step (the last good checkpoint stays)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{type(module).__name__}: loss is {loss.item()} at epoch {module.current_epoch}, "
            f"step {module.global_step} (expected a finite value); lower model.optim.lr or check the input "
            "data. The last good checkpoint is kept."
        )
