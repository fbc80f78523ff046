"""RoTTA (Yuan et al., "Robust Test-Time Adaptation in Dynamic Scenarios", CVPR 2023): robust BatchNorm, a
category-balanced memory bank with timeliness and uncertainty, and a teacher-student update on the bank's
samples every ``update_frequency`` samples; classification, online on a stream (``sfda.data.stream``; its
"practical" setting is ``continual`` with ``label_order: correlated``) or offline over epochs of a stored
target set. See docs/methods/rotta.md."""

from __future__ import annotations

import os

import torch

from ..models import SourceModel
from ..models.keyed_dropout import dropout_off
from ..models.norm import batch_norms
from ..models.robust_norm import use_robust_batch_norm
from ..models.tta_augment import draw_key, katana_augment
from ..pseudo_labels import EMATeacher, gather_rows
from ..pseudo_labels.memory import CategoryBalancedMemory, timeliness_weights
from ..pseudo_labels.teacher import ema_update
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim

AUGMENT_SALT = 0x2077A


def official_optim() -> Optim:
    """RoTTA's optimiser: Adam (betas 0.9, 0.999), lr 1e-3, no weight decay, a constant rate."""
    return Optim(name="adam", lr=1e-3, weight_decay=0.0, power=0.0, backbone_lr_mult=1.0)


class RoTTA(Adaptation):
    """Robust BatchNorm, a category-balanced memory bank of recent samples, and a timeliness-weighted
    teacher-student update on the bank every ``update_frequency`` samples.

    Every BatchNorm becomes a robust BatchNorm (``sfda.models.robust_norm``: statistics that follow the
    batches' by an EMA of momentum ``bn_momentum``, used in evaluation too); only their scale and shift train
    (Adam). Per step, on a batch (the official ``forward_and_adapt``):

    1. the teacher (an EMA of the student), in eval mode, predicts the batch: this is the prediction the
       stream scores, made before any update of the step;
    2. each sample of the GLOBAL batch, in stream order, is offered to the memory bank
       (``sfda.pseudo_labels.memory.CategoryBalancedMemory``: capacity ``memory_size``, the teacher's argmax
       as its class, the entropy of its prediction as its uncertainty, scores weighted by ``lambda_t`` and
       ``lambda_u``); after every ``update_frequency``-th sample offered since the start (or the last reset)
       the student updates once, on the bank as it is then:

           L = mean_i w(age_i) CE(softmax(teacher(m_i)), student(strong(m_i))),  w(a) = 1 / (1 + exp(a))

       the teacher and the student in train mode (both robust BatchNorms take the bank's statistics into
       theirs), ``strong`` the official strong augmentations (``sfda.models.tta_augment``); then the teacher
       moves towards the student: ``teacher = (1 - nu) teacher + nu student`` (parameters).

    Most steps therefore take no optimiser step: manual optimisation (a step returns no loss). Under DDP every
    process holds the same bank, filled from the gathered global batch, and computes the same update on all
    of it (the gradient average is then that update), so the bank, the weights and the predictions do not
    depend on the number of processes; a stream's unscored padding copy is never offered. Dropout stays as the
    run has it in the student (off on a stream) and off in the teacher.

    State (in checkpoints): the teacher (``teacher.model.*``) and the bank (``memory.*``: samples, classes,
    ages, uncertainties, indices, the count of samples offered). ``reset_method_state`` returns the teacher
    to the source and empties the bank (the update count restarts).

    Args:
        source, evaluate_source: see ``Adaptation``.
        optim: default RoTTA's Adam, lr 1e-3, constant.
        memory_size: the bank's capacity N (official 64).
        update_frequency: samples between two updates (official 64, the bank's capacity).
        nu: the teacher's EMA rate (official 0.001).
        bn_momentum: the robust BatchNorm's alpha (official 0.05).
        lambda_t, lambda_u: the weights of timeliness and uncertainty in the bank's scores (official 1, 1).
        soft_augmentations: the official ``soft`` ranges of the strong augmentations (official: not soft).
        flip: whether the strong augmentations may flip images horizontally (official yes).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, optim: Optim | None = None, memory_size: int = 64,
                 update_frequency: int = 64, nu: float = 0.001, bn_momentum: float = 0.05,
                 lambda_t: float = 1.0, lambda_u: float = 1.0, soft_augmentations: bool = False,
                 flip: bool = True, evaluate_source: bool = True):
        super().__init__(source, optim or official_optim(), evaluate_source=evaluate_source)
        for name, value, ok, expected in (
            ("memory_size", memory_size, memory_size >= 1, "a capacity >= 1"),
            ("update_frequency", update_frequency, update_frequency >= 1, "a sample count >= 1"),
            ("nu", nu, 0 < nu < 1, "an EMA rate in (0, 1)"),
            ("bn_momentum", bn_momentum, 0 < bn_momentum <= 1, "a momentum in (0, 1]"),
            ("lambda_t", lambda_t, lambda_t >= 0, "a weight >= 0"),
            ("lambda_u", lambda_u, lambda_u >= 0, "a weight >= 0"),
        ):
            if not ok:
                raise ValueError(f"model.{name}: expected {expected}, got {value}")
        norms = batch_norms(self.network)
        if not norms:
            raise ValueError(f"model.source: RoTTA replaces BatchNorm by robust BatchNorm, but the "
                             f"{self.task.name} network ({type(self.network).__name__}) has no BatchNorm "
                             "layer")
        if any(layer.running_mean is None for layer in norms):
            raise ValueError("model.source: RoTTA's robust BatchNorm starts from the source's running "
                             f"statistics, but a BatchNorm of the {type(self.network).__name__} network "
                             "keeps none (track_running_stats=False)")
        self.automatic_optimization = False
        self.update_frequency = update_frequency
        self.nu = nu
        self.soft_augmentations, self.flip = soft_augmentations, flip
        self.network.requires_grad_(False)
        self.norm_layers = use_robust_batch_norm(self.network, bn_momentum)
        for layer in self.norm_layers:
            layer.requires_grad_(True)
        self.teacher = EMATeacher(self.network, 1.0 - nu, field="model.nu")
        spec = self.task.input
        shape = (spec.channels, spec.size, spec.size)
        self.memory = CategoryBalancedMemory(memory_size, self.num_classes, shape, lambda_t, lambda_u)

    # networks and state -----------------------------------------------------------------------------------
    def evaluated_network(self) -> torch.nn.Module:
        return self.teacher.model

    def parameter_groups(self) -> list[dict]:
        params = [p for layer in self.norm_layers for p in layer.parameters()]
        return [{"params": params, "lr": self.optim.lr}]

    def reset_method_state(self) -> None:
        """The teacher returns to the source weights and statistics; the bank empties."""
        own = self.teacher.model.state_dict()
        source = self.__dict__["_source_state"]
        self.teacher.model.load_state_dict({k: source[k].to(own[k].device) for k in own}, strict=True)
        self.memory.reset()

    # one step -------------------------------------------------------------------------------------------
    def adapt_step(self, batch: dict) -> tuple[None, tuple]:
        """Steps 1-2 (see the class docstring); returns no loss (updates are taken here) and the teacher's
        prediction."""
        images, index = batch["image"], batch["index"]
        weight = batch.get("weight")
        keep = torch.ones(len(images), device=images.device) if weight is None else (weight > 0).float()
        teacher = self.teacher.model
        teacher.eval()
        with torch.no_grad():
            features, logits = teacher(images)
            probs = logits.float().softmax(dim=1)
            entropy = -(probs * torch.log(probs + 1e-6)).sum(dim=1)
        columns = (index.double(), keep.double(), probs.argmax(dim=1).double(), entropy.double())
        rows = gather_rows(torch.stack(columns, dim=1))
        samples = gather_rows(images)
        for row in torch.argsort(rows[:, 0]).tolist():  # the global batch in stream order
            if rows[row, 1] == 0:
                continue
            self.memory.add(samples[row], int(rows[row, 2]), float(rows[row, 3]), int(rows[row, 0]))
            if int(self.memory.seen) % self.update_frequency == 0:
                self.update_student()
        return None, (features, logits)

    def update_student(self) -> None:
        """One update on the bank as it is (see the class docstring), the same on every process."""
        memory, ages, index = self.memory.contents()
        teacher = self.teacher.model
        teacher.train()
        dropout_off(teacher)
        key = draw_key(int(os.environ.get("PL_GLOBAL_SEED", 0)), int(self.memory.seen), AUGMENT_SALT)
        spec = self.task.input
        strong = katana_augment(memory, spec.mean, spec.std, key, index, self.soft_augmentations, self.flip)
        with torch.no_grad():
            targets = teacher(memory)[1].float().softmax(dim=1)
        _, logits = self(strong, index)
        losses = -(targets * logits.float().log_softmax(dim=1)).sum(dim=1)
        loss = (losses * timeliness_weights(ages)).mean()
        self.manual_step(self.optimizers(), loss)
        self.follow_student()
        teacher.eval()
        self.log("train/loss", loss, prog_bar=True)

    def follow_student(self) -> None:
        """``teacher = (1 - nu) teacher + nu student`` over the parameters; the teacher's robust BatchNorm
        statistics are its own (the official averages parameters only)."""
        ema_update(self.teacher.model, self.network, 1.0 - self.nu, buffers=False)
