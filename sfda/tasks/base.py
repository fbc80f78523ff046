"""The task contract: what differs between classification, segmentation, detection and pose.

A method (a LightningModule, ``sfda.tasks.module.TaskModule``) HOLDS one ``Task``, chosen from the
source artifact's ``task`` (or, for source training, by the training class); it never inherits it. The
method trains; the task says how a network of that task is built from an artifact, checked against the
data, evaluated, and how its predictions are written. So a method that makes sense for every task
(source-only, AdaBN, Tent, Mean Teacher) is written once against this class.

Evaluation has one interface for every task: ``evaluation_rows`` turns a batch into per-sample rows
(``sfda.pseudo_labels.passes``: a tensor ``(B, ...)`` or a list of ``B`` tensors per name), the module
gathers the rows of the whole split over processes (one row per global sample index), and
``score_rows`` turns the gathered rows into flat scores ``{"<prefix>/<metric>": value,
"label_free/<validator>": value}``. Scores therefore never depend on the number of processes.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ..models import ArtifactError, SourceArtifact
from ..pseudo_labels.passes import Rows
from .optim import Optim


@contextmanager
def evaluating(network: torch.nn.Module):
    """``network`` in eval mode for the block, its mode before afterwards."""
    was_training = network.training
    network.eval()
    try:
        yield network
    finally:
        network.train(was_training)


TaskModule = L.LightningModule  # in annotations: the ``sfda.tasks.module.TaskModule`` that holds the task


class Task:
    """One task. Subclasses set the class attributes and implement the methods that raise.

    Attributes:
        name: the artifact's ``task`` field ("classification", "segmentation", "detection", "pose").
        headline: the metric the console and ``source_only/<headline>`` lead with ("acc", "dice", ...).
        per_item_scores, folds_batchnorm, teacher_defaults: see their comments.
        class_marginal: whether ``score_rows`` gives ``label_free/marginal_entropy`` (the entropy of the
            predicted class marginal that ``sfda.run.guards.CollapseGuard`` watches).
        default_optim: the optimiser of the task's source training and of methods that set none.
        names: class names (pose: joint names), in the network's output order.
        input: the input spec the network was trained with.
    """

    name: ClassVar[str]
    headline: ClassVar[str]
    class_marginal: ClassVar[bool] = False
    per_item_scores: ClassVar[bool] = False  # scores of three path parts go to results.json, not the loggers
    folds_batchnorm: ClassVar[bool] = False  # eval-mode passes may run on a BatchNorm-folded copy
    teacher_defaults: ClassVar[dict] = {}  # Mean Teacher's confidence, ema_momentum, ema_every for this task
    default_optim: ClassVar[Optim] = Optim()

    def __init__(self, names: list[str], input_spec):
        self.names = list(names)
        self.input = input_spec

    @property
    def num_classes(self) -> int:
        return len(self.names)

    # networks -------------------------------------------------------------------------------------------
    def build_network(self, artifact: SourceArtifact) -> torch.nn.Module:
        """The network a method adapts, built from the artifact's weights (checked)."""
        return artifact.build_network()

    def build_source_network(self, artifact: SourceArtifact) -> torch.nn.Module:
        """The untouched source network (source-only predictions beside the adapted ones)."""
        return self.build_network(artifact)

    def freeze_head(self, network: torch.nn.Module) -> None:
        """Keep the network's output layer fixed (hypothesis transfer); tasks without one refuse."""
        raise ValueError(f"model.freeze_head: the {self.name} task has no classifier head to freeze")

    def forward(self, module: TaskModule, images: torch.Tensor, index: torch.Tensor | None = None):
        """``module(images)``: the network's training-time output (classification ``(features, logits)``,
        segmentation logits, pose heatmaps)."""
        return module.network(images)

    def parameter_groups(self, network: torch.nn.Module, optim: Optim) -> list[dict]:
        """Optimiser groups over ``network``'s trainable parameters; default one group at ``optim.lr``."""
        return [{"params": [p for p in network.parameters() if p.requires_grad], "lr": optim.lr}]

    def check_data(self, datamodule, artifact: SourceArtifact) -> None:
        """Refuse target data whose classes or input spec differ from the artifact's; a datamodule without
        an input spec adopts the artifact's."""
        check_against_data(artifact, datamodule)

    # evaluation (the one interface) ----------------------------------------------------------------------
    def evaluation_rows(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> Rows:
        """Per-sample rows of one evaluation batch with ``network`` in eval mode (no gradient)."""
        raise NotImplementedError

    def score_rows(self, module: TaskModule, rows: Rows, prefix: str, label_free: bool = True
                   ) -> dict[str, float]:
        """Scores of the gathered rows of a split: ``<prefix>/...`` where samples have labels, and (with
        ``label_free``) the ``label_free/...`` validators. Identical on every process."""
        raise NotImplementedError

    def sample_rows(self, module: TaskModule, batch: dict) -> Rows:
        """Per-sample rows of an engine pass over the target (what banks, centroids and priors are built
        from); default the evaluation rows of the module's network."""
        return self.evaluation_rows(module, batch, module.network)

    def kept_report_rows(self, rows: Rows):
        """What the report's evidence keeps of an evaluation's rows, the source model's and the adapted one's
        (default nothing)."""
        return None

    def after_test(self, module: TaskModule, rows: Rows) -> None:
        """After ``sfda test`` has scored its gathered rows (segmentation writes ``per_volume.csv``)."""

    # predictions ---------------------------------------------------------------------------------------
    def predict(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> dict:
        """What the task's writers write for one batch of ``network``'s predictions (tasks that draw
        before/after overlays add the predictions of ``module.source_network()``)."""
        raise NotImplementedError

    @classmethod
    def writers(cls, module: TaskModule) -> list[Callback]:
        """The prediction writers of ``sfda predict``, returned from ``configure_callbacks``."""
        return []

    def report_evidence(self, module: TaskModule, folder: Path | None) -> None:
        """Write what ``sfda report`` draws (overlays, galleries) into ``folder`` (None off rank 0)."""

    # deployment (``sfda export``) -------------------------------------------------------------------------
    export_outputs: ClassVar[tuple[str, ...]] = ("logits",)  # the exported module's outputs, in order
    export_batch_dynamic: ClassVar[bool] = True  # whether an export takes any batch size

    def deployable(self, network: torch.nn.Module) -> torch.nn.Module:
        """``network`` as an exporter takes it: tensors in, the ``export_outputs`` out (default itself)."""
        return network

    def export_inputs(self, batch: dict) -> torch.Tensor:
        """The exported module's input cut from a batch of the run's own target data (default its images)."""
        return batch["image"]

    def deployment_spec(self, module: TaskModule) -> dict:
        """What a serving stack needs to feed an export and read its outputs (``preprocessing.json``)."""
        return {"task": self.name, "class_names": self.names, "input": self.input.to_dict(),
                "image": "float32 NCHW: pixels scaled to [0, 1], resized to input.size x input.size, then "
                         "(x - mean) / std per channel",
                "outputs": {"logits": "(B, K) class scores in class_names order; softmax gives "
                                      "probabilities"}}

    # what methods built on a teacher ask of the task -------------------------------------------------------
    def teacher_targets(self, module: TaskModule, teacher: torch.nn.Module, batch: dict, confidence: float):
        """Mean Teacher's pseudo-targets from the teacher on the weak view; tasks without them refuse."""
        raise NotImplementedError

    def student_loss(self, module: TaskModule, batch: dict, targets) -> tuple[torch.Tensor, dict, tuple]:
        """Mean Teacher's student loss on the strong view against ``targets``: ``(loss, logs, outputs)``."""
        raise NotImplementedError

    def prepare_teacher(self, network: torch.nn.Module, proposals: int | None) -> None:
        """Settings the teacher needs, given to ``network`` before the teacher is copied from it (detection:
        the run's count of proposals kept)."""

    def teacher_epoch_end(self, module: TaskModule, confidence: float) -> None:
        """Mean Teacher's epoch-end report on its pseudo-targets (detection: their precision and the images
        without any); none by default."""

    def mean_entropy(self, outputs) -> torch.Tensor:
        """Tent's loss: the mean prediction entropy of the network's training-time ``outputs``."""
        raise NotImplementedError(f"the {self.name} task has no class probabilities to take an entropy of")

    # online test-time adaptation (``sfda.tasks.stream``) ----------------------------------------------------
    def online_count_shape(self) -> tuple[int, ...]:
        """The shape of one domain's counts (the sufficient statistics of its online scores)."""
        raise ValueError(f"data: online test-time adaptation streams are not offered for the {self.name} "
                         "task yet (classification is)")

    def online_counts(self, module: TaskModule, outputs, labels: torch.Tensor, rows: torch.Tensor
                      ) -> torch.Tensor:
        """The counts of the predictions in ``outputs`` (the method's training-time output form) at the
        batch rows ``rows (B,) bool`` against ``labels``, shaped ``online_count_shape()``, int64."""
        raise NotImplementedError

    def online_scores(self, counts: torch.Tensor) -> dict[str, float]:
        """One domain's online scores from its counts, with ``samples`` (how many were scored)."""
        raise NotImplementedError


def check_against_data(artifact: SourceArtifact, datamodule) -> None:
    """Refuse a source model whose class count or input spec differs from the recipe's data; a
    datamodule that can (image folders) takes the model's class order."""
    if hasattr(datamodule, "adopt_class_names"):
        datamodule.adopt_class_names(artifact.class_names)
    names = getattr(datamodule, "class_names", None)
    permuted = sorted(map(str, names or [])) == sorted(artifact.class_names)
    if names and list(names) != artifact.class_names and permuted:
        raise ArtifactError(f"data.class_names {list(names)} hold the source model's classes in another "
                            f"order than its outputs {artifact.class_names}; labels and predictions would be "
                            "permuted. Give them in the model's order, or drop data.class_names to adopt it")
    if names and len(names) != artifact.num_classes:
        raise ArtifactError(
            f"class count mismatch: the source model has {artifact.num_classes} classes "
            f"{artifact.class_names} but data ({type(datamodule).__name__}) has {len(names)} classes "
            f"{names}; use a source model trained on the target's class set")
    spec = getattr(datamodule, "input_spec", None)
    if spec is None:
        datamodule.input_spec = artifact.input
    elif type(artifact.input).from_dict(spec.to_dict()) != artifact.input:
        raise ArtifactError(f"data.input {spec} differs from the source model's input spec {artifact.input}; "
                            "remove data.input to adopt the model's preprocessing")
