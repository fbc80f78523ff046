"""EATA and ETA (Niu et al., "Efficient Test-Time Model Adaptation without Forgetting", ICML 2022): Tent's
entropy minimisation of the normalisation layers' scale and shift, on the reliable (entropy below E0) and
non-redundant (unlike the moving average of past predictions) samples of each batch only, each weighted by
``exp(E0 - H)``; EATA adds an anti-forgetting Fisher regulariser towards the source weights, ETA is EATA
without it. Online on a stream (``sfda.data.stream``), or offline over epochs of a stored target set;
classification. See docs/methods/eata.md."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..losses.reliable import (
    global_sum,
    mean_over_global_selection,
    selected_mean,
    softmax_entropy,
    update_moving_average,
)
from ..models import SourceModel
from ..tasks.optim import Optim
from .tent import Tent


def official_optim() -> Optim:
    """EATA's and SAR's ImageNet-C optimiser: SGD, lr 0.00025 (batch 64), momentum 0.9, no weight decay,
    constant learning rate."""
    return Optim(name="sgd", lr=0.00025, momentum=0.9, nesterov=False, weight_decay=0.0, power=0.0,
                 backbone_lr_mult=1.0)


def eata_selection(logits: torch.Tensor, average: torch.Tensor | None, margin: float,
                   redundancy_margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EATA's two filters on ``logits (B, C)``: ``(entropies (B,), reliable (B,), selected (B,))``. Reliable:
    entropy below ``margin`` (E0, in nats; Eq. 3). Selected: reliable and, when there is a moving average
    ``average (C,)`` of past selected probabilities, a cosine similarity to it below ``redundancy_margin``
    (epsilon; Eq. 5: not redundant). Entropies keep their gradient."""
    entropies = softmax_entropy(logits)
    reliable = entropies < margin
    if average is None:
        return entropies, reliable, reliable
    probs = logits.detach().float().softmax(dim=1)
    similarity = F.cosine_similarity(average[None].to(probs), probs, dim=1)
    return entropies, reliable, reliable & (similarity < redundancy_margin)


class EATA(Tent):
    """Weighted entropy of the reliable, non-redundant samples, plus a Fisher regulariser (classification).

    Only the scale and shift of the normalisation layers train (BatchNorm, LayerNorm and GroupNorm, as Tent
    here; BatchNorm normalises with each batch's statistics, running statistics dropped), on

        L = sum_{selected} exp(E0 - H(x)) H(x) / |selected| + beta sum_k F_k (theta_k - theta0_k)^2

    over the samples of the GLOBAL batch that pass both filters (``eata_selection``), the weight
    ``exp(E0 - H)`` without gradient. The moving average of probabilities is
    ``m <- 0.9 m + 0.1 mean_{selected} p`` (the first batch with a selection sets it). A batch without any
    selected sample takes no step (the official code skips backward and step).

    Predictions: the batch is predicted by the forward whose loss the step then minimises, before the update
    (the official ``forward_and_adapt_eata`` returns the outputs of the forward it adapts on).

    Fisher without source data: the official code takes F on 2,000 clean SOURCE images. Here it is the same
    estimator (squared gradient of the batch-mean cross-entropy against the model's own argmax, averaged over
    batches) on the first ``fisher_samples`` TARGET samples of the run, at the SOURCE weights: at each of the
    first steps, before the update, the batch is passed once more with the adapted parameters replaced by
    their source values (``theta0``) and its squared gradient joins the average, until ``fisher_samples``
    samples have been counted (the first step's penalty is 0 whatever F is, as theta = theta0). The gradient
    is the GLOBAL batch's (BatchNorm statistics and gradients summed over processes), so F is the same on 1 or
    N processes. ``reset_method_state`` returns F to zero: after a reset it is re-estimated on the new
    domain's first samples.

    Why classification only: both filters and the weight act on one class-probability vector per image; a
    segmentation output is a map of them, for which the paper defines neither the redundancy of a sample nor
    its weight, and online streams exist for classification only.

    State (buffers, in checkpoints): ``probs_average``, ``probs_updates`` (0: no moving average yet) and, with
    the regulariser, ``anchor`` (theta0), ``fisher``, ``fisher_batches`` and ``fisher_seen``.

    Args:
        source, evaluate_source: see ``Adaptation``.
        optim: default EATA's ImageNet-C SGD (lr 0.00025, momentum 0.9); its CIFAR-10-C setting in the
            test-time-adaptation framework is Adam, lr 1e-3.
        entropy_margin: E0 as a fraction of ln C, the entropy of a uniform prediction (official 0.4).
        redundancy_margin: epsilon, the cosine similarity to the moving average of probabilities below which
            a sample is not redundant (official 0.05 for ImageNet's 1,000 classes; the framework's CIFAR-10:
            0.4).
        fisher_weight: beta, the weight of the Fisher regulariser (official 2000 for ImageNet; the framework's
            CIFAR: 1); 0 is ETA.
        fisher_samples: how many target samples of the run's first batches estimate the Fisher (official 2,000
            source samples).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, optim: Optim | None = None, entropy_margin: float = 0.4,
                 redundancy_margin: float = 0.05, fisher_weight: float = 2000.0, fisher_samples: int = 2000,
                 evaluate_source: bool = True):
        super().__init__(source, optim or official_optim(), evaluate_source=evaluate_source)
        for name, value, ok, expected in (
            ("entropy_margin", entropy_margin, 0 < entropy_margin <= 1, "a fraction of ln C in (0, 1]"),
            ("redundancy_margin", redundancy_margin, 0 < redundancy_margin <= 1,
             "a cosine similarity in (0, 1]"),
            ("fisher_weight", fisher_weight, fisher_weight >= 0, "a weight >= 0 (0: ETA)"),
            ("fisher_samples", fisher_samples, fisher_samples >= 1, "a sample count >= 1"),
        ):
            if not ok:
                raise ValueError(f"model.{name}: expected {expected}, got {value}")
        self.margin = entropy_margin * math.log(self.num_classes)
        self.redundancy_margin = redundancy_margin
        self.fisher_weight = fisher_weight
        self.fisher_samples = fisher_samples
        self.automatic_optimization = False  # a batch without a selected sample takes no step (DDP too)
        # Tent's layers: the normalisation layers' scales and shifts (refused above where there are none)
        self.adapted = [(name, tuple(p.shape)) for name, p in self.named_parameters() if p.requires_grad]
        self.register_buffer("probs_average", torch.zeros(self.num_classes))
        self.register_buffer("probs_updates", torch.zeros((), dtype=torch.int64))
        if fisher_weight > 0:
            anchor = torch.cat([p.detach().reshape(-1) for p in self.adapted_parameters()]).float()
            self.register_buffer("anchor", anchor)
            self.register_buffer("fisher", torch.zeros_like(anchor))
            self.register_buffer("fisher_batches", torch.zeros((), dtype=torch.int64))
            self.register_buffer("fisher_seen", torch.zeros((), dtype=torch.int64))

    # what trains ------------------------------------------------------------------------------------------
    def adapted_parameters(self) -> list[torch.nn.Parameter]:
        """The normalisation layers' scales and shifts, in a fixed order (``anchor``'s and ``fisher``'s)."""
        names = {name for name, _ in self.adapted}
        return [p for name, p in self.named_parameters() if name in names]

    def parameter_groups(self) -> list[dict]:
        return [{"params": self.adapted_parameters(), "lr": self.optim.lr}]

    def reset_method_state(self) -> None:
        """No moving average of probabilities and no Fisher estimate yet (the anchor stays the source
        weights)."""
        self.probs_average.zero_()
        self.probs_updates.zero_()
        if self.fisher_weight > 0:
            self.fisher.zero_()
            self.fisher_batches.zero_()
            self.fisher_seen.zero_()

    # the Fisher regulariser -------------------------------------------------------------------------------
    def estimate_fisher(self, batch: dict, keep: torch.Tensor) -> None:
        """While fewer than ``fisher_samples`` samples have been counted: the squared gradient, at the source
        weights, of the global batch's mean cross-entropy against its own argmax joins the running mean
        ``fisher``. Every process calls it (collectives in the forward, the backward and the sums)."""
        if self.fisher_weight == 0 or int(self.fisher_seen) >= self.fisher_samples:
            return
        sizes = [math.prod(shape) for _, shape in self.adapted]
        pieces = self.anchor.split(sizes)
        anchors = {name: piece.view(shape).clone().requires_grad_(True)
                   for (name, shape), piece in zip(self.adapted, pieces, strict=True)}
        with torch.enable_grad():
            _, logits = functional_call(self, anchors, (batch["image"], batch["index"]))
            logits = logits.float()
            losses = F.cross_entropy(logits, logits.argmax(dim=1), reduction="none")
            count = int(global_sum(keep.float().sum()))
            share = (losses * keep).sum() / max(count, 1)  # this process's share of the global batch's mean
            grads = torch.autograd.grad(share, list(anchors.values()), allow_unused=True)
        flat = torch.cat([(torch.zeros_like(a) if g is None else g).reshape(-1)
                          for a, g in zip(anchors.values(), grads, strict=True)])
        gradient = global_sum(flat)  # the shares' gradients add up to the global batch's
        batches = int(self.fisher_batches)
        self.fisher.mul_(batches).add_(gradient * gradient).div_(batches + 1)
        self.fisher_batches += 1
        self.fisher_seen += count

    def fisher_penalty(self) -> torch.Tensor:
        """``beta sum_k F_k (theta_k - theta0_k)^2`` over the adapted parameters (Eq. 9)."""
        theta = torch.cat([p.reshape(-1) for p in self.adapted_parameters()]).float()
        return self.fisher_weight * (self.fisher * (theta - self.anchor) ** 2).sum()

    # one step -------------------------------------------------------------------------------------------
    def objective(self, batch: dict) -> tuple[torch.Tensor | None, tuple]:
        """This batch's loss (None: nothing selected in the global batch) and its outputs; the Fisher estimate
        and the moving average of probabilities take the batch in. A stream's unscored padding copy (weight 0)
        is never selected nor counted."""
        images = batch["image"]
        keep = batch["weight"] > 0 if self.stream is not None else torch.ones(len(images), dtype=torch.bool,
                                                                              device=images.device)
        self.estimate_fisher(batch, keep)
        outputs = self(images, batch["index"])
        _, logits = outputs
        average = self.probs_average if int(self.probs_updates) else None
        entropies, reliable, selected = eata_selection(logits, average, self.margin, self.redundancy_margin)
        selected = selected & keep
        mean_probs, count = selected_mean(logits.float().softmax(dim=1), selected)
        if count:
            update_moving_average(self.probs_average, self.probs_updates, mean_probs)
        reliable_count, total = global_sum(torch.stack([(reliable & keep).sum(), keep.sum()])).tolist()
        total = max(total, 1)
        self.log_dict({"train/reliable": reliable_count / total, "train/selected": count / total})
        if not count:
            return None, outputs
        weights = torch.exp(self.margin - entropies.detach())
        loss = mean_over_global_selection(weights * entropies, selected, count)
        if self.fisher_weight > 0:
            loss = loss + self.fisher_penalty()
        return loss, outputs

    def adapt_step(self, batch: dict) -> tuple[None, tuple]:
        """Online, the batch is predicted by the forward whose loss the step then minimises (predicted while
        adapting, as the official ``forward_and_adapt_eata``). Manual optimisation: a batch without any
        selected sample takes no step (as officially: no backward, no step), which automatic optimisation
        cannot skip under DDP."""
        loss, outputs = self.objective(batch)
        if loss is not None:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.log("train/loss", loss.detach(), prog_bar=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # manual optimisation: the (constant on a stream) schedule steps here
            scheduler.step()
        return None, outputs


class ETA(EATA):
    """EATA without its Fisher regulariser: the paper's ETA (classification).

    ``EATA`` with ``fisher_weight`` 0: the reliable, non-redundant, re-weighted entropy alone; everything else
    (defaults, predictions, state, DDP) is ``EATA``'s.

    Args:
        source, optim, entropy_margin, redundancy_margin, evaluate_source: see ``EATA``.
    """

    def __init__(self, source: SourceModel, optim: Optim | None = None, entropy_margin: float = 0.4,
                 redundancy_margin: float = 0.05, evaluate_source: bool = True):
        super().__init__(source, optim, entropy_margin=entropy_margin, redundancy_margin=redundancy_margin,
                         fisher_weight=0.0, evaluate_source=evaluate_source)
