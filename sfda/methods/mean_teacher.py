"""Mean Teacher for source-free adaptation, for every task that defines pseudo-targets from a teacher
(detection: LPLD's "MT" baseline; pose: the baseline of the source-free pose papers)."""

from __future__ import annotations

from typing import Literal

import torch

from ..models import SourceModel
from ..pseudo_labels import EMATeacher
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim


class MeanTeacher(Adaptation):
    """Per step the EMA teacher (always in eval mode) predicts on the weak view; its confident predictions
    are the pseudo-targets (``Task.teacher_targets``: detection's boxes scoring above ``confidence``, the
    HPL; pose's joints peaking at ``confidence`` or more, moved into the strong view and rendered as
    heatmaps); the student learns them on the strong view of the same geometry with the task's loss
    (``Task.student_loss``: the Faster R-CNN losses, an image without HPL training as all background;
    JointsMSE). The teacher follows the student by EMA over parameters and buffers, after each epoch's last
    training batch (before that epoch's validation) or each step, and is the network evaluated and
    predicting, as in the official code; validation also scores the student (``<prefix>_student/...``).

    Args:
        source, optim, evaluate_source: see ``Adaptation``.
        confidence: pseudo-target threshold (None: the task's; detection 0.7, pose 0.5).
        ema_momentum: teacher share kept at each update (None: detection 0.75 per epoch, pose 0.999 per step).
        ema_every: 'epoch' or 'step' (None: the task's).
        ema_source_share: instead of ``ema_momentum``: the share of the source weights the teacher keeps at
            the run's end; the momentum is ``share ** (1 / updates)`` over the run's updates (recorded as
            ``ema/momentum``). A fixed 0.999 over a few hundred CPU steps leaves the teacher mostly source.
        teacher_proposals: detection: RPN proposals kept after NMS in eval mode (None: 300), by the teacher
            and by every other network the run scores (the student, the source model).
    """

    tasks = ("detection", "pose")
    needs_strong_view = True  # the datamodule yields "strong" beside the weak "image"
    paired_name = "student"  # validation also scores the student: <prefix>_student/...

    def __init__(self, source: SourceModel, confidence: float | None = None,
                 ema_momentum: float | None = None, ema_every: Literal["epoch", "step"] | None = None,
                 teacher_proposals: int | None = None, ema_source_share: float | None = None,
                 optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(source, optim, evaluate_source=evaluate_source)
        defaults = self.task.teacher_defaults
        self.confidence = defaults["confidence"] if confidence is None else confidence
        self.ema_every = ema_every or defaults["ema_every"]
        momentum = defaults["ema_momentum"] if ema_momentum is None else ema_momentum
        if not 0 <= self.confidence <= 1:
            raise ValueError(f"model.confidence: expected a threshold in [0, 1], got {self.confidence}")
        if self.ema_every not in ("epoch", "step"):
            raise ValueError(f"model.ema_every: expected 'epoch' or 'step', got {self.ema_every!r}")
        if teacher_proposals is not None and (self.task.name != "detection" or teacher_proposals < 1):
            raise ValueError(f"model.teacher_proposals: expected a positive count for a detection model, got "
                             f"{teacher_proposals} for a {self.task.name} model")
        if ema_source_share is not None and ema_momentum is not None:
            raise ValueError("model.ema_source_share: give either ema_momentum or ema_source_share, not both")
        self.task.prepare_teacher(self.network, teacher_proposals)
        self.teacher = EMATeacher(self.network, momentum)
        self.ema_source_share = ema_source_share

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.ema_source_share is not None:
            self.teacher.momentum = self.momentum_from_share(self.ema_source_share, self.ema_every,
                                                             "model.ema_source_share")

    def evaluated_network(self) -> torch.nn.Module:
        return self.teacher.model

    def paired_network(self) -> torch.nn.Module:
        return self.network  # the student the evaluated teacher follows

    def student_boxes(self, view) -> list[torch.Tensor] | None:
        """Detection: boxes whose student RoI outputs ``extra_loss`` needs (LPLD: the teacher's proposals)."""
        return None

    def extra_loss(self, batch: dict, targets, outputs: tuple) -> torch.Tensor | None:
        """A further loss term from the pseudo-targets and the student's outputs (LPLD); none here."""
        return None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.teacher.model.eval()  # Lightning puts every submodule in train mode at each epoch start
        targets = self.task.teacher_targets(self, self.teacher.model, batch, self.confidence)
        loss, logs, outputs = self.task.student_loss(self, batch, targets)
        extra = self.extra_loss(batch, targets, outputs)
        if extra is not None:
            loss = loss + extra
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict(logs)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """The EMA update: after each step, or after the epoch's last training batch (counted as Lightning
        counts them: ``limit_train_batches`` and resumed epochs included; the optimiser steps there whatever
        the gradient accumulation), so that the epoch's validation scores, and its checkpoint holds, the
        updated teacher (Lightning validates before ``on_train_epoch_end``)."""
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if self.ema_every == "step" or last:
            self.teacher.update(self.network)
            self._updated_in_epoch = self.current_epoch

    def on_train_epoch_end(self) -> None:
        if self.ema_every == "epoch" and getattr(self, "_updated_in_epoch", None) != self.current_epoch:
            self.teacher.update(self.network)  # an epoch cut short (a stop, max_steps, a loader of no length)
        self.log_ema_share(self.teacher.momentum, self.ema_every)
        self.task.teacher_epoch_end(self, self.confidence)
