"""CoTTA (Wang et al., "Continual Test-Time Domain Adaptation", CVPR 2022): a student trained on the
predictions of an EMA teacher, averaged over augmentations where the source model is unsure, with a
stochastic restore of a few weights to the source at every step; classification and segmentation, online on
a stream (``sfda.data.stream``) or offline over epochs of a stored target set. See docs/methods/cotta.md."""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from ..models import SourceModel
from ..models.keyed_dropout import dropout_off
from ..models.norm import GlobalBatchNormSync, batch_norms, use_batch_statistics
from ..models.tta_augment import draw_key, katana_augment
from ..pseudo_labels import EMATeacher, gather_rows, masked_global_mean
from ..pseudo_labels.teacher import ema_update
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim
from ..tasks.stream import snapshot

# the confidence below which the teacher's prediction is augmentation-averaged: CIFAR-10-C's AP (the batch
# mean of the source model's top probability; CIFAR-100-C 0.72, ImageNet-C 0.1), and ACDC's per-pixel one
THRESHOLDS = {"classification": 0.92, "segmentation": 0.69}
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # the ACDC release's test-time scales (each also flipped)
AUGMENT_SALT, RESTORE_SALT = 0xC077A, 0x5E570


def official_optim(task: str) -> Optim:
    """CoTTA's optimisers: Adam (betas 0.9, 0.999), no weight decay, a constant rate; lr 1e-3 (CIFAR-10-C),
    and 6e-5 / 8 for segmentation (the ACDC release: SegFormer's rate at batch 8, run at batch 1)."""
    lr = 6e-5 / 8 if task == "segmentation" else 1e-3
    return Optim(name="adam", lr=lr, weight_decay=0.0, power=0.0, backbone_lr_mult=1.0)


def scaled_size(size: tuple[int, ...], ratio: float, multiple: int) -> tuple[int, ...]:
    """``size`` times ``ratio``, each side rounded to the nearest multiple of ``multiple`` (at least one)."""
    return tuple(max(multiple, int(side * ratio / multiple + 0.5) * multiple) for side in size)


@torch.no_grad()
def scale_flip_average(network: torch.nn.Module, images: torch.Tensor, scales: tuple[float, ...],
                       multiple: int, plain: torch.Tensor | None = None) -> torch.Tensor:
    """The segmentation teacher's augmentation-averaged prediction (the ACDC release's multi-scale and flip
    test, mmseg's ``aug_test``): ``images (B, C, *spatial)`` resized by each ratio of ``scales`` (sides
    rounded to ``multiple``; repeated sizes once), each also flipped along the last axis; each view's logits
    are resized back, turned into probabilities and flipped back, then averaged: ``(B, K, *spatial)``
    probabilities. ``plain``: the logits of the unaugmented view, when already computed."""
    size = tuple(images.shape[2:])
    mode = "bilinear" if len(size) == 2 else "trilinear"
    sizes = list(dict.fromkeys(scaled_size(size, ratio, multiple) for ratio in scales))
    total = None
    for shape in sizes:
        resized = images
        if shape != size:
            resized = F.interpolate(images, size=shape, mode=mode, align_corners=False)
        for flipped in (False, True):
            if shape == size and not flipped and plain is not None:
                logits = plain
            else:
                logits = network(resized.flip(-1) if flipped else resized)
            logits = logits.float()
            if shape != size:
                logits = F.interpolate(logits, size=size, mode=mode, align_corners=False)
            probs = logits.softmax(dim=1)
            probs = probs.flip(-1) if flipped else probs
            total = probs if total is None else total + probs
    return total / (2 * len(sizes))


def network_stride(network: torch.nn.Module) -> int:
    """The total stride of a MONAI UNet (the product of its ``strides``), else 32."""
    strides = getattr(network, "strides", None)
    if isinstance(strides, (list, tuple)) and strides and all(isinstance(s, int) for s in strides):
        return math.prod(strides)
    return 32


class CoTTA(Adaptation):
    """A student learns the predictions of its EMA teacher, averaged over augmentations where the source model
    is unsure, and a few weights return to the source at every step.

    Per step, on a batch x (Wang et al. 2022, Sec. 3; the official ``forward_and_adapt``):

    1. the student (the adapted network, every parameter trained) predicts x;
    2. the teacher, an EMA of the student, predicts x; where the ANCHOR (the source model) is unsure, the
       teacher's prediction is averaged over augmented views instead: classification, when the batch mean of
       the anchor's top probability is below ``confidence_threshold``, the mean of the teacher's LOGITS over
       ``augmentations`` random views (``sfda.models.tta_augment``); segmentation, at each pixel where the
       anchor's top probability is not above the threshold, the mean of its probabilities over the
       ``scales`` x {plain, flipped} views, each resized and flipped back (``scale_flip_average``; the ACDC
       release);
    3. the student learns it: classification the cross-entropy to the teacher's softmax, segmentation the
       cross-entropy to its argmax (the ACDC release trains on the teacher's hard labels); a mean over the
       GLOBAL batch (a stream's unscored padding copy left out);
    4. after the optimiser's step, the teacher moves towards the student (``ema_momentum``, parameters),
       then every element of every trained parameter returns to its source value with probability
       ``restore_probability`` (stochastic restore).

    Predictions: the stream scores the TEACHER's prediction of step 2 (augmentation-averaged where it was),
    made before the step's update, as the official code returns ``outputs_ema``; ``sfda test`` / ``predict``
    use the teacher. BatchNorm normalises with each batch's own statistics in every network (student, teacher,
    anchor; running statistics dropped, as the official ``configure_model``), in evaluation too; under DDP
    the statistics, the anchor's confidence and the loss are the global batch's.

    State: the teacher (``teacher.model.*``, in checkpoints); the source weights of the stochastic restore
    and the anchor are the base's source snapshot and a copy built from the artifact, never saved.
    ``reset_method_state`` returns the teacher to the source.

    Args:
        source, evaluate_source: see ``Adaptation``.
        optim: default Adam, lr 1e-3 (classification, CIFAR-10-C) or 7.5e-6 (segmentation, ACDC), constant.
        ema_momentum: the teacher's EMA momentum per step (official 0.999).
        restore_probability: the stochastic restore's probability per weight element (official 0.01).
        confidence_threshold: below it the teacher's prediction is augmentation-averaged (None: CIFAR-10-C's
            0.92 for classification, ACDC's 0.69 per pixel for segmentation).
        augmentations: classification: the views averaged (official 32).
        soft_augmentations: classification: the official ``soft`` ranges (milder jitter, rotation and scale).
        flip: classification: whether the augmentations may flip images horizontally (official yes).
        scales: segmentation: the resize ratios of the teacher's views (the ACDC release's 0.5 to 2.0).
        size_multiple: segmentation: the views' sides are rounded to multiples of this (None: a MONAI UNet's
            total stride, else 32).
    """

    tasks = ("classification", "segmentation")

    def __init__(self, source: SourceModel, optim: Optim | None = None, ema_momentum: float = 0.999,
                 restore_probability: float = 0.01, confidence_threshold: float | None = None,
                 augmentations: int = 32, soft_augmentations: bool = False, flip: bool = True,
                 scales: tuple[float, ...] = SCALES, size_multiple: int | None = None,
                 evaluate_source: bool = True):
        super().__init__(source, optim, evaluate_source=evaluate_source)
        if optim is None:
            self._optim = official_optim(self.task.name)
        threshold = THRESHOLDS[self.task.name] if confidence_threshold is None else confidence_threshold
        for name, value, ok, expected in (
            ("restore_probability", restore_probability, 0 <= restore_probability <= 1,
             "a probability in [0, 1] (0: no restore)"),
            ("confidence_threshold", threshold, 0 <= threshold <= 1, "a probability in [0, 1]"),
            ("augmentations", augmentations, augmentations >= 1, "a view count >= 1"),
            ("scales", scales, len(scales) > 0 and all(s > 0 for s in scales), "positive resize ratios"),
            ("size_multiple", size_multiple, size_multiple is None or size_multiple >= 1,
             "a positive side multiple"),
        ):
            if not ok:
                raise ValueError(f"model.{name}: expected {expected}, got {value}")
        self.restore_probability = restore_probability
        self.confidence_threshold = threshold
        self.augmentations = augmentations
        self.soft_augmentations, self.flip = soft_augmentations, flip
        self.scales = tuple(scales)
        self.size_multiple = network_stride(self.network) if size_multiple is None else size_multiple
        self.network.requires_grad_(True)  # the official trains every weight and bias
        self.teacher = EMATeacher(self.network, ema_momentum)
        self.norm_layers = batch_norms(self.network) + batch_norms(self.teacher.model)

    # networks and state -----------------------------------------------------------------------------------
    def evaluated_network(self) -> torch.nn.Module:
        return self.teacher.model

    def normalises_with_the_batch(self) -> bool:
        return bool(self.norm_layers)

    def parameter_groups(self) -> list[dict]:
        """One group of every parameter, at the optimiser's rate (the official trains all at one rate)."""
        return [{"params": [p for p in self.network.parameters() if p.requires_grad], "lr": self.optim.lr}]

    def on_train_start(self) -> None:
        super().on_train_start()  # offline: the source model's scores with its running statistics
        use_batch_statistics(self.norm_layers)
        dropout_off(self.teacher.model)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        use_batch_statistics(self.norm_layers)  # a resumed or tested CoTTA normalises with the batch

    def reset_method_state(self) -> None:
        """The teacher returns to the source weights."""
        own = self.teacher.model.state_dict()
        source = self.source_state()
        self.teacher.model.load_state_dict({k: source[k].to(own[k].device) for k in own}, strict=True)

    def source_state(self) -> dict[str, torch.Tensor]:
        """The source weights (the base's snapshot on a stream; offline, a snapshot of the artifact's
        network), on this device, never saved."""
        cached = self.__dict__.get("_source_on_device")
        if cached is None or cached[0] != self.device:
            state = self.__dict__.get("_source_state")
            if state is None:
                state = snapshot(self.task.build_source_network(self.artifact))
            cached = (self.device, {k: v.to(self.device) for k, v in state.items()})
            self.__dict__["_source_on_device"] = cached
        return cached[1]

    def anchor(self) -> torch.nn.Module:
        """The source network that judges confidence: train mode, BatchNorm with the (global) batch's
        statistics (``GlobalBatchNorm``, as the CLI makes the student's and the teacher's under DDP), dropout
        off; built from the artifact on first use, never saved."""
        cached = self.__dict__.get("_anchor")
        if cached is None or cached[0] != self.device:
            network = self.task.build_source_network(self.artifact)
            use_batch_statistics(batch_norms(network))
            GlobalBatchNormSync().apply(network)
            network.requires_grad_(False)
            network.train()
            dropout_off(network)
            cached = (self.device, network.to(self.device))
            self.__dict__["_anchor"] = cached
        return cached[1]

    # one step -------------------------------------------------------------------------------------------
    def adapt_step(self, batch: dict) -> tuple[torch.Tensor, object]:
        """Steps 1-3 (see the class docstring); returns the loss and the teacher's prediction."""
        images = batch["image"]
        weight = batch.get("weight", torch.ones(len(images), device=images.device))
        keep = weight > 0
        teacher = self.teacher.model
        teacher.train()
        dropout_off(teacher)
        student = self(images, batch["index"])
        if self.task.name == "segmentation":
            losses, predicted = self.segmentation_targets(teacher, images, student)
        else:
            losses, predicted = self.classification_targets(teacher, images, student, keep, batch["index"])
        loss = masked_global_mean(losses, keep)
        self.log("train/loss", loss, prog_bar=True)
        return loss, predicted

    def classification_targets(self, teacher, images, student, keep, index) -> tuple[torch.Tensor, tuple]:
        """Per-sample losses and the teacher's ``(features, logits)``, augmentation-averaged when the global
        batch's mean anchor confidence is below the threshold."""
        with torch.no_grad():
            features, logits = teacher(images)
            confidence = self.anchor()(images)[1].float().softmax(dim=1).max(dim=1).values
            sums = torch.stack([(confidence * keep).sum(), keep.sum().float()])
            totals = gather_rows(sums[None]).sum(dim=0)
            mean_confidence = totals[0] / totals[1].clamp_min(1.0)
            averaged = bool(mean_confidence < self.confidence_threshold)
            if averaged:
                logits = torch.stack([teacher(self.augmented(images, view, index))[1].float()
                                      for view in range(self.augmentations)]).mean(dim=0)
        self.log("train/anchor_confidence", mean_confidence)
        self.log("train/augmentation_averaged", float(averaged))
        targets = logits.float().softmax(dim=1)
        losses = -(targets * student[1].float().log_softmax(dim=1)).sum(dim=1)
        return losses, (features, logits)

    def augmented(self, images: torch.Tensor, view: int, index: torch.Tensor) -> torch.Tensor:
        """View ``view`` of this step's augmentations (the same on every process and after a resume)."""
        key = draw_key(int(os.environ.get("PL_GLOBAL_SEED", 0)), self.global_step, view, AUGMENT_SALT)
        spec = self.task.input
        return katana_augment(images, spec.mean, spec.std, key, index, self.soft_augmentations, self.flip)

    def segmentation_targets(self, teacher, images, student) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image losses (the mean pixel cross-entropy to the teacher's labels) and the teacher's
        prediction as log-probabilities ``(B, K, *spatial)``: its plain view where the anchor is confident,
        else the scale-and-flip average."""
        with torch.no_grad():
            plain = teacher(images)
            averaged = scale_flip_average(teacher, images, self.scales, self.size_multiple, plain)
            anchor = self.anchor()(images).float().softmax(dim=1).max(dim=1).values
            confident = anchor > self.confidence_threshold
            probs = torch.where(confident[:, None], plain.float().softmax(dim=1), averaged)
        self.log("train/anchor_confident_pixels", confident.float().mean())
        losses = F.cross_entropy(student.float(), probs.argmax(dim=1), reduction="none")
        losses = losses.flatten(1).mean(dim=1)
        return losses, probs.clamp_min(1e-12).log()

    # step 4, before any callback's on_train_batch_end (a checkpoint saved there holds the updated state) --
    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        step = self.global_step
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.update_teacher_and_restore(step)

    @torch.no_grad()
    def update_teacher_and_restore(self, step: int) -> None:
        """The teacher's EMA update (parameters, as the official), then the stochastic restore of step
        ``step``: each element of each trained parameter takes its source value where a uniform draw seeded by
        (run seed, step) falls below ``restore_probability`` (the same draws on every process)."""
        ema_update(self.teacher.model, self.network, self.teacher.momentum, buffers=False)
        if self.restore_probability == 0:
            return
        source = self.source_state()
        key = draw_key(int(os.environ.get("PL_GLOBAL_SEED", 0)), step, RESTORE_SALT)
        generator = torch.Generator(device=self.device).manual_seed(key)
        for name, parameter in self.network.named_parameters():
            if parameter.requires_grad:
                draws = torch.rand(parameter.shape, generator=generator, device=parameter.device)
                parameter.copy_(torch.where(draws < self.restore_probability, source[name], parameter))
