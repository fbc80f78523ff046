"""MEMO (Zhang, Levine and Finn, "MEMO: Test Time Robustness via Adaptation and Augmentation", NeurIPS 2022):
for ONE test point, every parameter takes a step on the entropy of the model's marginal prediction over
AugMix augmentations of that point, then the point is predicted by the updated model; episodically, the
model returns to the source weights before the next point. Online on a stream (``sfda.data.stream``);
classification. See docs/methods/memo.md."""

from __future__ import annotations

import math
import os

import torch
from torchvision.transforms.v2 import functional as TF

from ..models import SourceModel
from ..models.norm import batch_norms
from ..models.tta_augment import draw_key
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim
from .test_time_norm import PriorMixedStatistics

AUGMIX_SALT = 0x4D_454D_4F  # the draw key's salt of MEMO's augmentations ("MEMO")
OPS = ("autocontrast", "equalize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
       "posterize")  # AugMix's operations, MEMO's ``augmentations.augmentations`` (no ImageNet-C overlap)


def marginal_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits (A, C)`` of A augmentations of one point: the entropy ``H(p_bar)`` of the marginal
    ``p_bar = mean_a softmax(logits_a)`` and ``log p_bar (C,)``, computed in log space (MEMO's Eq. 2)."""
    log_probs = logits.float().log_softmax(dim=1)
    log_marginal = log_probs.logsumexp(dim=0) - math.log(log_probs.shape[0])
    log_marginal = log_marginal.clamp_min(torch.finfo(log_marginal.dtype).min)
    return -(log_marginal.exp() * log_marginal).sum(), log_marginal


def _operation(x: torch.Tensor, name: str, severity: float, g: torch.Generator) -> torch.Tensor:
    """One AugMix operation on a uint8 ``(C, H, W)`` image at a level drawn in ``[0.1, severity]`` (AugMix's
    ``sample_level``), the sign of geometric ones drawn too."""
    level = 0.1 + float(torch.rand((), generator=g)) * (severity - 0.1)
    sign = 1.0 if float(torch.rand((), generator=g)) < 0.5 else -1.0
    size, fill = x.shape[-1], [128.0] * x.shape[0]  # geometric operations fill with grey, as officially
    if name == "autocontrast":
        return TF.autocontrast(x)
    if name == "equalize":
        return TF.equalize(x)
    if name == "rotate":
        return TF.rotate(x, sign * int(level * 30 / 10), interpolation=TF.InterpolationMode.BILINEAR,
                         fill=fill)
    if name == "solarize":
        return TF.solarize(x, 256 - int(level * 256 / 10))
    if name == "posterize":
        return TF.posterize(x, 4 - int(level * 4 / 10))
    if name.startswith("shear"):
        shear = math.degrees(math.atan(sign * level * 0.3 / 10))
        return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, fill=fill,
                         shear=[shear, 0.0] if name.endswith("x") else [0.0, shear],
                         interpolation=TF.InterpolationMode.BILINEAR)
    shift = int(sign * int(level * (size / 3) / 10))
    return TF.affine(x, angle=0.0, translate=[shift, 0] if name.endswith("x") else [0, shift], scale=1.0,
                     shear=[0.0, 0.0], fill=fill)


def augmix(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], key: int,
           severity: float = 1.0, width: int = 3, max_depth: int = 3, flip: bool = True) -> torch.Tensor:
    """One MEMO augmentation of ``image (C, H, W)`` (normalised with ``mean``/``std``; returned so): the
    pre-augmentation (a random crop after padding by 1/8 of the side, and a horizontal flip with p = 1/2:
    MEMO's CIFAR ``RandomCrop(32, padding=4)`` and flip), then AugMix: ``width`` chains of 1 to ``max_depth``
    operations mixed with Dirichlet(1) weights, mixed with the pre-augmented image by a Beta(1, 1) weight.
    Every draw comes from a generator seeded by ``key`` (see ``MEMO.augmented``)."""
    g = torch.Generator().manual_seed(key)
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=image.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=image.device).view(shape)
    pixels = ((image.float() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    _, h, w = pixels.shape
    pad = max(h // 8, 1)
    padded = torch.nn.functional.pad(pixels, [pad, pad, pad, pad])
    top, left = (int(torch.randint(0, 2 * pad + 1, (), generator=g)) for _ in range(2))
    pixels = padded[:, top:top + h, left:left + w]
    if flip and float(torch.rand((), generator=g)) < 0.5:
        pixels = pixels.flip(-1)
    weights = -torch.log1p(-torch.rand(width, generator=g))  # Dirichlet(1, ..., 1): normalised Exp(1) draws
    weights = weights / weights.sum()
    mixing = float(torch.rand((), generator=g))  # Beta(1, 1)
    mix = torch.zeros(pixels.shape, dtype=torch.float32, device=image.device)
    for chain in range(width):
        x = pixels
        for _ in range(int(torch.randint(1, max_depth + 1, (), generator=g))):
            x = _operation(x, OPS[int(torch.randint(0, len(OPS), (), generator=g))], severity, g)
        mix += float(weights[chain]) * x.float() / 255
    mixed = mixing * pixels.float() / 255 + (1 - mixing) * mix
    return ((mixed - m) / s).to(image.dtype)


class PointStatistics(PriorMixedStatistics):
    """``PriorMixedStatistics`` whose mixed statistics are fresh tensors, and whose restore puts fresh copies
    of the source statistics back: the eval-mode BatchNorm keeps the tensors it normalised with for the
    backward, which an in-place restore would invalidate."""

    def __call__(self, layer, inputs) -> None:
        layer.running_mean, layer.running_var = layer.running_mean.clone(), layer.running_var.clone()
        super().__call__(layer, inputs)

    def restore(self, layer, inputs, output) -> None:
        device = layer.running_mean.device
        layer.running_mean = self.source_mean.to(device).clone()
        layer.running_var = self.source_var.to(device).clone()


def official_optim() -> Optim:
    """MEMO's CIFAR-10-C setting (official ``test_adapt.py``): plain SGD, lr 0.005, no momentum, no weight
    decay, constant; every parameter at the same rate."""
    return Optim(name="sgd", lr=0.005, momentum=0.0, nesterov=False, weight_decay=0.0, power=0.0,
                 backbone_lr_mult=1.0)


class MEMO(Adaptation):
    """Each test point of a batch, in turn: (episodic) the network returns to the source weights and the
    optimiser to fresh statistics; ``steps`` times, ``augmentations`` AugMix views of the point (``augmix``)
    are passed in eval mode and every parameter takes an optimiser step on their marginal entropy
    (``marginal_entropy``); then the point is predicted by the updated network (predicted AFTER adapting, as
    officially). Manual optimisation: one step per point and iteration.

    BatchNorm (official ``prior_strength``): each BatchNorm normalises with ``(N * source + batch) / (N + 1)``
    statistics, the batch (the augmentations of one point, or the point alone when predicting) counting as
    ONE sample (``PointStatistics``); the source statistics are never changed.

    Settings: episodic MEMO (default, the paper) predicts each point from the source model, so
    ``reset_each_shift``, ``continual``, ``gradual`` and ``mixed_domains`` give the same predictions (the
    stream's own resets add nothing). ``episodic: false`` keeps the updates from point to point (a
    continual MEMO: not in the paper) and then the stream setting matters. The paper's batch is one point; a
    stream batch of B points is adapted point by point (the same as B batches of one). One process only: a
    point's update is the whole step, and DDP would average the gradients of different points.

    Args:
        source, evaluate_source: see ``Adaptation``.
        optim: default MEMO's CIFAR-10-C plain SGD (lr 0.005, no momentum); its ImageNet: SGD lr 0.00025;
            the test-time-adaptation framework's CIFAR-10-C adds Nesterov momentum 0.9.
        augmentations: views per point (official CIFAR-10-C: 32; ImageNet: 64).
        steps: updates per point (official ``niter``: 1).
        episodic: return to the source before every point (official: true).
        prior: N, the source BatchNorm statistics' weight in samples (official ``prior_strength`` 16).
        severity: AugMix's operation severity (official 1).
        flip: the pre-augmentation's horizontal flip (official: true; false for digits or text).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, optim: Optim | None = None, augmentations: int = 32,
                 steps: int = 1, episodic: bool = True, prior: float = 16.0, severity: float = 1.0,
                 flip: bool = True, evaluate_source: bool = True):
        super().__init__(source, optim or official_optim(), evaluate_source=evaluate_source)
        for name, value, ok, expected in (
            ("augmentations", augmentations, augmentations >= 1, "a view count >= 1"),
            ("steps", steps, steps >= 1, "an update count >= 1"),
            ("prior", prior, prior >= 0, "a prior strength N >= 0 (source samples)"),
            ("severity", severity, 0.1 <= severity <= 10, "an AugMix severity in [0.1, 10]"),
        ):
            if not ok:
                raise ValueError(f"model.{name}: expected {expected}, got {value}")
        self.automatic_optimization = False
        self.augmentations, self.steps, self.episodic = augmentations, steps, episodic
        self.prior, self.severity, self.flip = prior, severity, flip
        self.mixing = []
        for layer in batch_norms(self.network):
            mixing = PointStatistics(layer, prior)
            layer.register_forward_pre_hook(mixing)
            layer.register_forward_hook(mixing.restore)
            self.mixing.append(mixing)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.stream is None and self.episodic:
            raise ValueError("model.episodic: an episodic MEMO returns to the source before every point, so "
                             "an offline fit would keep nothing but its last point's update; expected false "
                             "for an offline fit, or run it on a stream (data: StreamDataModule)")

    def start_stream(self, datamodule) -> None:
        if self.trainer.world_size > 1:
            raise ValueError("trainer.devices: MEMO adapts on one test point at a time and DDP would "
                             "average the gradients of different points; expected 1 process, got "
                             f"{self.trainer.world_size}")
        super().start_stream(datamodule)

    def parameter_groups(self) -> list[dict]:
        return [{"params": [p for p in self.network.parameters() if p.requires_grad], "lr": self.optim.lr}]

    def counted_as(self, samples: int) -> None:
        """Make the next forward's batch of ``samples`` count as ONE sample against the prior N."""
        for mixing in self.mixing:
            mixing.prior = self.prior * samples

    def augmented(self, image: torch.Tensor, index: int) -> torch.Tensor:
        """``(A, C, H, W)``: the point's views at this step, keyed by (run seed, global step, global sample
        index, view)."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        spec = self.task.input
        return torch.stack([augmix(image, spec.mean, spec.std, draw_key(seed, self.global_step, index, view,
                                                                         AUGMIX_SALT), self.severity,
                                   flip=self.flip) for view in range(self.augmentations)])

    def adapt_point(self, image: torch.Tensor, index: int) -> float:
        """``steps`` updates on the marginal entropy of the point's augmentations; the last loss."""
        optimizer = self.optimizers()
        for _ in range(self.steps):
            views = self.augmented(image, index)
            self.counted_as(len(views))
            optimizer.zero_grad()
            loss, _ = marginal_entropy(self.network(views)[1])
            self.manual_backward(loss)
            optimizer.step()
        return float(loss.detach())

    def adapt_step(self, batch: dict):
        """Predicted after adapting: each point's prediction is made by the network updated on it."""
        images, index = batch["image"], batch["index"]
        scored = batch["weight"] > 0 if "weight" in batch else torch.ones(len(images), dtype=torch.bool)
        self.network.eval()  # as officially: BatchNorm with the prior, dropout off
        features, logits, losses = [], [], []
        for i in range(len(images)):
            if scored[i]:
                if self.episodic:
                    self.reset_to_source()
                losses.append(self.adapt_point(images[i], int(index[i])))
            self.counted_as(1)
            with torch.no_grad():
                f, z = self.network(images[i:i + 1])
            features.append(f)
            logits.append(z)
        if losses:
            self.log("train/marginal_entropy", sum(losses) / len(losses), prog_bar=True)
        return None, (torch.cat(features), torch.cat(logits))
