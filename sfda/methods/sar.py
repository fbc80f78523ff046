"""SAR (Niu et al., "Towards Stable Test-Time Adaptation in Dynamic Wild World", ICLR 2023): reliable entropy
minimisation (samples with entropy below E0 only) of the normalisation layers' scale and shift by a
sharpness-aware (SAM) two-step update, and model recovery: back to the source weights when the moving average
of the loss falls below e_m (a collapse to confident trivial predictions). Online on a stream
(``sfda.data.stream``), or offline over epochs of a stored target set; classification. See
docs/methods/sar.md."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..losses.reliable import (
    global_sum,
    mean_over_global_selection,
    selected_mean,
    softmax_entropy,
    update_moving_average,
)
from ..models import SourceModel
from ..tasks.optim import Optim
from ..tasks.stream import snapshot
from .eata import official_optim
from .tent import Tent

# the official ``collect_params``: the top layers do not adapt (ResNet layer4; ViT-Base blocks 9-11 and its
# final norm)
TOP_LAYERS = ("layer4", "blocks.9", "blocks.10", "blocks.11", "norm")


def under(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether the dotted module ``name`` contains one of ``patterns`` as whole consecutive name parts
    (``blocks.1`` matches ``net.blocks.1.norm1``, not ``net.blocks.10.norm1``)."""
    parts = name.split(".")
    for pattern in patterns:
        wanted = pattern.split(".")
        if any(parts[i:i + len(wanted)] == wanted for i in range(len(parts) - len(wanted) + 1)):
            return True
    return False


@torch.no_grad()
def climb(params: list[torch.nn.Parameter], rho: float) -> list[torch.Tensor]:
    """SAM's first step: ``theta <- theta + rho g / (||g|| + 1e-12)``, ``g`` the gradients in ``.grad`` (one
    norm over all of them); returns the values before the climb."""
    before = [p.detach().clone() for p in params]
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return before
    norm = torch.norm(torch.stack([g.norm(p=2) for g in grads]), p=2)
    scale = rho / (norm + 1e-12)
    for p in params:
        if p.grad is not None:
            p.add_(p.grad * scale.to(p))
    return before


@torch.no_grad()
def descend_from(params: list[torch.nn.Parameter], before: list[torch.Tensor]) -> None:
    """SAM's second step, first half: the parameters back to ``before`` (the base optimiser then steps with
    the gradients taken at the perturbed weights)."""
    for p, value in zip(params, before, strict=True):
        p.copy_(value)


class SAR(Tent):
    """Sharpness-aware entropy minimisation of the reliable samples, with model recovery (classification).

    The scale and shift of the normalisation layers train (BatchNorm with each batch's statistics, running
    statistics dropped; LayerNorm; GroupNorm), except those under ``skip_layers``. Each step (manual
    optimisation):

    1. forward; reliable samples: entropy below E0; loss: their mean entropy; backward;
    2. climb to ``theta + rho g / ||g||``; forward again; reliable again: those of step 1 whose entropy is
       still below E0; loss: their mean entropy; backward;
    3. back to ``theta``, and the base optimiser (``optim``) steps with the gradient of step 2;
    4. the moving average of step 2's loss, ``e <- 0.9 e + 0.1 loss`` (the first value sets it; a batch with
       no sample reliable twice leaves it), and recovery: when ``e < recovery_threshold`` the network returns
       to the source weights, the optimiser state is cleared and ``e`` is unset (``results``:
       ``sar/recoveries``).

    Means are over the GLOBAL batch's reliable samples (sums and counts over processes), so under DDP the
    update and the moving average do not depend on the number of processes.

    Predictions: the batch is predicted by the first forward, the one the step adapts on (the official
    ``forward_and_adapt_sar`` returns its outputs): predicted while adapting, before the update.

    The top layers: the official code adapts no norm layer under ResNet's ``layer4`` or ViT-Base's blocks
    9-11 and final ``norm``. ``skip_layers`` holds these names, matched as whole parts of the module names: on
    torchvision ResNets (``resnet18/34/50`` backbones) ``layer4`` is left out; on timm ViTs (zoo models)
    blocks 9-11 and the final norm. The LeNet and MLP backbones have no norm layer, and the SHOT-shaped
    bottleneck's BatchNorm1d (their only one) adapts: it is not one of the official names, and without it
    they would have nothing to adapt. EfficientNet-Lite has no official rule: everything adapts.

    Why classification only: the reliability filter and the recovery's loss are per image entropies of one
    class-probability vector; a segmentation map is not one, and online streams exist for classification only.

    State (buffers, in checkpoints): ``loss_average``, ``loss_updates`` (0: unset) and ``recoveries``.

    Args:
        source, evaluate_source: see ``Adaptation``.
        optim: SAM's base optimiser; default SAR's ResNet setting: SGD, lr 0.00025 (batch 64), momentum 0.9
            (the test-time-adaptation framework's CIFAR-10-C: SGD, lr 1e-3, momentum 0.9).
        entropy_margin: E0 as a fraction of ln C, the entropy of a uniform prediction (official 0.4).
        rho: SAM's neighbourhood radius (official 0.05).
        recovery_threshold: e_m, the moving average of the loss below which the model recovers (official
            0.2, in nats).
        skip_layers: dotted module-name patterns whose norm layers do not adapt (official: the top layers).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, optim: Optim | None = None, entropy_margin: float = 0.4,
                 rho: float = 0.05, recovery_threshold: float = 0.2,
                 skip_layers: tuple[str, ...] = TOP_LAYERS, evaluate_source: bool = True):
        super().__init__(source, optim or official_optim(), evaluate_source=evaluate_source)
        for name, value, ok, expected in (
            ("entropy_margin", entropy_margin, 0 < entropy_margin <= 1, "a fraction of ln C in (0, 1]"),
            ("rho", rho, rho > 0, "a neighbourhood radius > 0"),
            ("recovery_threshold", recovery_threshold, recovery_threshold >= 0, "an entropy >= 0 (nats)"),
        ):
            if not ok:
                raise ValueError(f"model.{name}: expected {expected}, got {value}")
        self.automatic_optimization = False  # two forward and backward passes per step
        self.margin = entropy_margin * math.log(self.num_classes)
        self.rho = rho
        self.recovery_threshold = recovery_threshold
        self.skip_layers = tuple(skip_layers)
        for name, module in self.network.named_modules():  # Tent's layers, less the skipped top layers
            if under(name, self.skip_layers):
                module.requires_grad_(False)
        self.adapted = [name for name, p in self.named_parameters() if p.requires_grad]
        if not self.adapted:
            raise ValueError(f"model.skip_layers: every normalisation layer of the "
                             f"{type(self.network).__name__} network lies under {list(self.skip_layers)}; "
                             "expected patterns that leave some to adapt")
        self.register_buffer("loss_average", torch.zeros(()))
        self.register_buffer("loss_updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("recoveries", torch.zeros((), dtype=torch.int64))

    # what trains ------------------------------------------------------------------------------------------
    def adapted_parameters(self) -> list[torch.nn.Parameter]:
        names = set(self.adapted)
        return [p for name, p in self.named_parameters() if name in names]

    def parameter_groups(self) -> list[dict]:
        return [{"params": self.adapted_parameters(), "lr": self.optim.lr}]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and "_source_state" not in self.__dict__:  # offline: what recovery returns to
            self.__dict__["_source_state"] = snapshot(self.network)

    def reset_method_state(self) -> None:
        """No moving average of the loss yet (recoveries keep counting)."""
        self.loss_average.zero_()
        self.loss_updates.zero_()

    # one step -------------------------------------------------------------------------------------------
    def sharpness_aware_update(self, batch: dict, optimizer, backward: Callable[[torch.Tensor], None]
                               ) -> tuple[tuple, torch.Tensor, int]:
        """Steps 1-3 of the class docstring with ``optimizer`` (SAM's base) and ``backward`` (Lightning's
        ``manual_backward``: DDP averages the gradients): ``(outputs of the first forward, the second loss's
        mean over the global batch, how many samples it is over)``."""
        images, index = batch["image"], batch["index"]
        keep = batch["weight"] > 0 if self.stream is not None else torch.ones(len(images), dtype=torch.bool,
                                                                              device=images.device)
        params = self.adapted_parameters()
        optimizer.zero_grad()
        outputs = self(images, index)
        entropies = softmax_entropy(outputs[1])
        reliable = (entropies < self.margin) & keep
        backward(mean_over_global_selection(entropies, reliable, int(global_sum(reliable.float().sum()))))
        before = climb(params, self.rho)
        optimizer.zero_grad()
        second = softmax_entropy(self(images, index)[1])
        again = reliable & (second < self.margin)
        value, count = selected_mean(second, again)
        backward(mean_over_global_selection(second, again, count))
        descend_from(params, before)
        optimizer.step()
        optimizer.zero_grad()
        return outputs, value, count

    def adapt_step(self, batch: dict) -> tuple[None, tuple]:
        """Predicted while adapting (the first forward's outputs); then the moving average and recovery."""
        outputs, value, count = self.sharpness_aware_update(batch, self.optimizers(), self.manual_backward)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # manual optimisation: the (constant on a stream) schedule steps here
            scheduler.step()
        if count:
            update_moving_average(self.loss_average, self.loss_updates, value)
            self.log("train/loss", value, prog_bar=True)
        if int(self.loss_updates) and float(self.loss_average) < self.recovery_threshold:
            self.recoveries += 1
            self.reset_to_source()  # the source weights, the moving average unset, fresh optimiser state
        return None, outputs

    def on_train_epoch_end(self) -> None:
        self.results["sar/recoveries"] = float(self.recoveries)
        super().on_train_epoch_end()
